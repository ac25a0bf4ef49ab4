"""The four wheels, built once per session from a copy of each package's folder.

The copy leaves out ``build/``, ``*.egg-info`` and ``tests/``, so a stale
``build/lib`` of an earlier editable install cannot leak into a wheel: each
wheel holds exactly what the source tree holds. Built with ``pip wheel
--no-deps --no-build-isolation`` (the setuptools pinned in
requirements/constraints.txt; no network).
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest
from wheel_cases import PACKAGES, REPO_ROOT


@pytest.fixture(scope="session")
def wheels(tmp_path_factory) -> dict[str, pathlib.Path]:
    """``{distribution name: wheel path}`` for the four packages."""
    root = tmp_path_factory.mktemp("wheels")
    sources = []
    for name, (folder, _) in PACKAGES.items():
        copy = root / "src" / name
        shutil.copytree(REPO_ROOT / folder, copy, ignore=shutil.ignore_patterns(
            "build", "*.egg-info", "__pycache__", "tests"))
        sources.append(str(copy))
    out = root / "dist"
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                             "--no-build-isolation", "--no-cache-dir", "-q", "-w", str(out),
                             *sources], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    built = {}
    for name in PACKAGES:
        (wheel,) = out.glob(f"{name.replace('-', '_')}-*.whl")
        built[name] = wheel
    return built


@pytest.fixture(name="wheel_files")
def wheel_files_fixture():
    """``wheel_files(path)``: ``{path inside the wheel: content}``."""
    def wheel_files(wheel: pathlib.Path) -> dict[str, bytes]:
        with zipfile.ZipFile(wheel) as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    return wheel_files
