"""A plain ``pytest`` at the repository root says in one line to use ``make test``.

It would otherwise import every suite into one process (torchvision after
tensorflow segfaults; Keras picks one backend; suites share test-file
basenames). The root conftest stops at the first file of a second suite,
before importing it; one suite, or a file of it, runs as usual.
"""

from __future__ import annotations

import re
import subprocess
import sys

from wheel_cases import REPO_ROOT


def _pytest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


def test_plain_pytest_at_the_root_refuses_in_one_line():
    result = _pytest("-q", "--collect-only")
    assert result.returncode == 4, result.stdout[-3000:] + result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if "make test" in line]
    assert len(lines) == 1 and "spans several suites" in lines[0]
    assert "ERROR" not in result.stdout  # no collection error before it


def test_every_makefile_suite_path_is_in_one_suite(pytestconfig):
    """Each pytest path the Makefile's suites pass lies in exactly one root suite."""
    (root_conftest,) = [plugin for plugin in pytestconfig.pluginmanager.get_plugins()
                        if getattr(plugin, "__file__", None) == str(REPO_ROOT / "conftest.py")]
    suite_of = root_conftest.suite_of
    makefile = (REPO_ROOT / "Makefile").read_text()
    detection = re.search(r"TORCH_DETECTION_TESTS := \$\(addprefix ([^,]+),", makefile).group(1)
    suites = re.search(r"^SUITES := ((?:.*\\\n)*.*)$", makefile, flags=re.M).group(1)
    found = re.findall(r"^(test-[\w-]+): setup.*\n\t.*\$\(call pytest,(.*)\)$", makefile,
                       flags=re.M)
    assert {target for target, _ in found} == set(suites.replace("\\", " ").split())
    for target, paths in found:
        paths = paths.replace("$(TORCH_DETECTION_TESTS)", detection)
        roots = {suite_of(REPO_ROOT / p) for p in paths.split()
                 if not p.startswith("--") and not p.startswith("$(")}
        assert len(roots) == 1 and None not in roots, (target, roots)


def test_one_suite_runs():
    result = _pytest("-q", "--collect-only", "tests/core/test_dct.py", "tests/core/test_cost.py")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
