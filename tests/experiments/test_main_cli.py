"""The main job's command line: seeds and their validation (no training here)."""

from __future__ import annotations

import pytest

from enl_experiments.main import cli as main


def test_seed_list_starts_at_first_seed():
    assert main.seed_list(0, 3) == [0, 1, 2]
    assert main.seed_list(1, 2) == [1, 2]


@pytest.mark.parametrize(("first", "count", "name"), [(-1, 1, "first_seed"), (0, 0, "seeds"),
                                                      (True, 1, "first_seed"), (0, 1.5, "seeds")])
def test_seed_list_rejects_bad_values(first, count, name):
    with pytest.raises(ValueError, match=f"`{name}`.*received"):
        main.seed_list(first, count)


@pytest.mark.parametrize("argv", [["--seeds", "0"], ["--first-seed", "-2"]])
def test_bad_seed_flags_exit_with_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as raised:
        main.main(argv)
    assert raised.value.code == 2
    assert "received" in capsys.readouterr().err
