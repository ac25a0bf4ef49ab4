"""Root pytest configuration shared by every package's tests.

Hypothesis profiles: "ci" is derandomized and small enough for `make test`;
"dev" draws many more examples (`make test-long`, or HYPOTHESIS_PROFILE=dev).
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev", max_examples=300, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


import pathlib  # noqa: E402
import re  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parent


def readme_example_source(name: str, readme: pathlib.Path = REPO_ROOT / "README.md") -> str:
    """The ```python block of README.md whose first line is ``# example: <name>``."""
    text = readme.read_text()
    blocks = re.findall(r"```python\n(# example: ([\w-]+)\n.*?)```", text, flags=re.S)
    for source, block_name in blocks:
        if block_name == name:
            return source
    raise LookupError(f"README.md has no ```python block starting with '# example: {name}'; "
                      f"found {[b for _, b in blocks]}")


@pytest.fixture
def readme_example():
    """Factory fixture: ``readme_example("keras-quickstart")`` returns the code
    of that README block so a test can execute it and the README cannot rot."""
    return readme_example_source


# One pytest process per suite, as `make test` runs them: importing torchvision
# after tensorflow segfaults, Keras picks its backend once per process, and
# suites share test-file basenames. The roots of the Makefile's suites; a file
# belongs to the longest root that contains it.
SUITE_ROOTS = ("tests/core", "tests/parity", "tests/experiments", "tests/bench", "tests/packaging",
               "packages/enl-keras/tests", "packages/enl-keras/tests/garden",
               "packages/enl-torch/tests")
_collected_suites: set[str] = set()


def suite_of(path: pathlib.Path) -> str | None:
    """The suite root (relative to the repository) holding ``path``; None outside them."""
    try:
        relative = pathlib.Path(path).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return None
    roots = [root for root in SUITE_ROOTS if relative == root or relative.startswith(root + "/")]
    return max(roots, key=len) if roots else None


def pytest_collectstart(collector):
    # Before the module is imported: stop at the first file of a second suite.
    if not isinstance(collector, pytest.Module):
        return
    suite = suite_of(collector.path)
    if suite is None:
        return
    _collected_suites.add(suite)
    if len(_collected_suites) > 1:
        pytest.exit(f"this pytest run spans several suites ({', '.join(sorted(_collected_suites))}"
                    "), which must not share a process (frameworks, Keras backends): run `make "
                    "test`, or one suite (`make help` lists them)", returncode=4)
