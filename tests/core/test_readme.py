"""The README's enl-core example runs as written."""


def test_core_reference_example_runs(readme_example, capsys):
    exec(compile(readme_example("core-reference"), "README.md:core-reference", "exec"), {})
    assert "BlockCost(macs=" in capsys.readouterr().out
