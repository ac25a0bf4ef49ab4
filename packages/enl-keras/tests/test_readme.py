"""The root README's Keras quick start runs as written (on this process's backend)."""

from __future__ import annotations


def test_keras_quickstart_runs(readme_example, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example saves enl_quickstart.keras in the cwd
    source = readme_example("keras-quickstart")
    exec(compile(source, "README.md:keras-quickstart", "exec"), {"__name__": "readme"})
    assert (tmp_path / "enl_quickstart.keras").is_file()
