"""The installed enl-experiments wheel finds its configs from a folder outside the repository.

The wheel goes into its own ``--target`` folder (``--no-deps``: its
dependencies are this environment's), and the main job's ``--dry-run``
(which checks the framework's extra and reads the profile's YAML files,
writes nothing) runs from an empty folder with only that target and enl-core
on its path: the repository's sources are not importable there.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

from wheel_cases import REPO_ROOT


def _source_root(module: str) -> str:
    """The folder holding ``module``'s package, as this environment imports it."""
    return str(pathlib.Path(importlib.util.find_spec(module).origin).parents[1])


def test_installed_main_job_reads_its_packaged_configs(wheels, tmp_path):
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                              "--target", str(target), str(wheels["enl-experiments"])],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), _source_root("enl_core")])}
    command = [sys.executable, "-c",
               "import enl_experiments, runpy, sys; print('package', enl_experiments.__file__); "
               "sys.argv = ['main', '--profile', 'tiny', '--dry-run']; "
               "runpy.run_module('enl_experiments.main', run_name='__main__')"]
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"package {target / 'enl_experiments' / '__init__.py'}"
    assert REPO_ROOT not in work.parents and not (work / "experiments").exists()
    configs = target / "enl_experiments" / "configs"
    assert f"+3ENL TD configs: {configs / 'beach_common.yaml'}, {configs / 'beach_enl.yaml'}" \
        in lines
    assert f"data: {work / 'data'}" in lines and f"results: {work / 'results'}" in lines
    assert list(work.iterdir()) == []  # a dry run writes nothing
