"""enl_experiments.common: child processes, machine info, Markdown tables."""

from __future__ import annotations

import sys

import pytest

from enl_experiments.common import machine, markdown, proc


def test_run_child_tees_output_and_keeps_the_tail(tmp_path):
    seen = []
    with open(tmp_path / "child.log", "w") as log:
        result = proc.run_child([sys.executable, "-c", "for i in range(30): print(i)"], log,
                                on_line=seen.append, tail_lines=3)
    assert (result.returncode, result.tail, result.timed_out) == (0, ["27", "28", "29"], False)
    assert len(seen) == 30
    text = (tmp_path / "child.log").read_text().splitlines()
    assert text[0].startswith("$ ") and text[1:] == [str(i) for i in range(30)]


def test_run_child_runs_in_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "child.log", "w") as log:
        result = proc.run_child([sys.executable, "-c", "import os; print(os.getcwd())"], log)
    assert result.tail == [str(tmp_path)]


def test_run_child_reports_exit_code_and_timeout(tmp_path):
    with open(tmp_path / "child.log", "w") as log:
        failed = proc.run_child([sys.executable, "-c", "import sys; print('x'); sys.exit(3)"],
                                log)
        killed = proc.run_child([sys.executable, "-c", "import time; time.sleep(60)"], log,
                                timeout_s=0.5)
    assert (failed.returncode, failed.tail, failed.timed_out) == (3, ["x"], False)
    assert killed.timed_out and killed.returncode != 0


@pytest.mark.parametrize(("kwargs", "name"), [({"timeout_s": 0}, "timeout_s"),
                                              ({"tail_lines": 0}, "tail_lines")])
def test_run_child_rejects_bad_arguments(tmp_path, kwargs, name):
    with open(tmp_path / "child.log", "w") as log, pytest.raises(ValueError, match=f"`{name}`"):
        proc.run_child([sys.executable, "-c", "pass"], log, **kwargs)


def test_child_env_is_unbuffered_and_takes_overrides(monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    env = proc.child_env(KERAS_BACKEND="tensorflow")
    assert (env["PYTHONUNBUFFERED"], env["TF_CPP_MIN_LOG_LEVEL"], env["KERAS_BACKEND"]) == (
        "1", "0", "tensorflow")  # the caller's log level is kept


def test_machine_info_and_its_one_line_description():
    info = machine.machine_info()
    assert info["logical_cores"] >= 1 and info["memory_bytes"] > 0
    assert isinstance(info["gpus"], list)
    line = machine.describe({**info, "gpus": []})
    assert line.startswith(f"{info['cpu']}, {info['logical_cores']} cores, ")
    assert line.endswith("GiB RAM, no GPU")
    assert machine.describe({**info, "gpus": ["A", "B"]}).endswith("GPUs: A, B")


def test_markdown_table():
    assert markdown.table(["a", "b"], [[1, "x"]]).splitlines() == [
        "| a | b |", "|---|---|", "| 1 | x |"]
    with pytest.raises(ValueError, match=r"`rows\[0\]` must have 2 cells"):
        markdown.table(["a", "b"], [[1]])
