"""Each wheel holds what its code loads at run time, its licence and complete metadata.

``make test-packaging``: builds the four wheels (the ``wheels`` fixture),
reads them as zip files, and runs ``twine check --strict`` on them.
"""

from __future__ import annotations

import email.parser
import re
import subprocess
import sys

import pytest
from wheel_cases import PACKAGES, REPO_ROOT

LICENSE = (REPO_ROOT / "LICENSE").read_bytes()


def _metadata(files: dict[str, bytes]):
    (name,) = [n for n in files if n.endswith(".dist-info/METADATA")]
    return email.parser.BytesParser().parsebytes(files[name])


def test_the_root_licence_is_the_apache_2_text():
    text = LICENSE.decode()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


@pytest.mark.parametrize("name", PACKAGES)
def test_package_licence_files_are_the_root_one(name):
    folder, _ = PACKAGES[name]
    assert (REPO_ROOT / folder / "LICENSE").read_bytes() == LICENSE, (
        f"{folder}/LICENSE differs from the root LICENSE: copy it again")


@pytest.mark.parametrize("name", PACKAGES)
def test_wheel_holds_every_module_and_the_licence(wheels, wheel_files, name):
    folder, module = PACKAGES[name]
    files = wheel_files(wheels[name])
    source = REPO_ROOT / folder / "src"
    expected = {str(p.relative_to(source)) for p in (source / module).rglob("*.py")
                if "__pycache__" not in p.parts}
    assert {n for n in files if n.endswith(".py")} == expected
    (licence,) = [n for n in files if n.endswith(".dist-info/licenses/LICENSE")]
    assert files[licence] == LICENSE


@pytest.mark.parametrize("name", PACKAGES)
def test_wheel_metadata_is_complete(wheels, wheel_files, name):
    folder, _ = PACKAGES[name]
    metadata = _metadata(wheel_files(wheels[name]))
    assert metadata["Name"] == name
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["License-File"] == "LICENSE"
    assert metadata["Author"] == "enl contributors"
    assert any(c.startswith("Topic :: ") for c in metadata.get_all("Classifier"))
    assert metadata["Description-Content-Type"] == "text/markdown"
    readme = (REPO_ROOT / folder / "README.md").read_text()
    assert metadata.get_payload().strip() == readme.strip()


@pytest.mark.parametrize("name", PACKAGES)
def test_readme_stands_alone(name):
    """The long description links nothing that does not ship with the package."""
    folder, _ = PACKAGES[name]
    readme = (REPO_ROOT / folder / "README.md").read_text()
    assert "../" not in readme
    assert not re.search(r"\]\((?!https?://)[^)]*\)", readme), "relative Markdown link"
    assert "Apache-2.0" in readme


def test_experiments_wheel_holds_its_configs(wheels, wheel_files):
    files = wheel_files(wheels["enl-experiments"])
    source = REPO_ROOT / "experiments" / "src"
    configs = sorted(str(p.relative_to(source))
                     for p in (source / "enl_experiments" / "configs").rglob("*.yaml"))
    assert len(configs) == 16  # 4 beach_*.yaml + 12 garden/ rows (R50, R101 x 2 x 3)
    for name in configs:
        assert files[name] == (source / name).read_bytes(), name


def test_experiments_declares_its_extras(wheels, wheel_files):
    metadata = _metadata(wheel_files(wheels["enl-experiments"]))
    assert set(metadata.get_all("Provides-Extra")) == {"garden", "torch", "bench"}
    requires = metadata.get_all("Requires-Dist")
    assert 'enl-keras[garden]; extra == "garden"' in requires
    assert 'enl-torch[detection]; extra == "torch"' in requires
    assert "psutil" in requires and "pyyaml" in requires


def test_enl_keras_has_an_extra_per_backend(wheels, wheel_files):
    metadata = _metadata(wheel_files(wheels["enl-keras"]))
    assert set(metadata.get_all("Provides-Extra")) >= {"tensorflow", "torch", "jax", "garden"}


def test_package_readme_examples_are_the_tested_root_ones(readme_example):
    """The package READMEs repeat root README examples (which tests run): same text."""
    checked = 0
    for name, (folder, _) in PACKAGES.items():
        path = REPO_ROOT / folder / "README.md"
        for example in re.findall(r"```python\n# example: ([\w-]+)\n", path.read_text()):
            assert readme_example(example, readme=path) == readme_example(example), (name, example)
            checked += 1
    assert checked == 3  # core-reference, keras-quickstart, torch-quickstart


def test_twine_check_strict(wheels):
    result = subprocess.run([sys.executable, "-m", "twine", "check", "--strict",
                             *map(str, wheels.values())], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == len(PACKAGES)
