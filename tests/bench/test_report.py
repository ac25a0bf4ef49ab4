"""Report formatting (enl_experiments.bench.report) and the plots."""

import json
import os

from results_factory import detector_variants, scaling_section, training_rows

from enl_experiments.bench import cli, report
from enl_experiments.bench.paper import TABLE_3


def _results():
    return {"meta": {"command": "python -m enl_experiments.bench", "started": "t0",
                     "finished": "t1", "machine": {"cpu": "test cpu", "logical_cores": 2,
                                                   "memory_bytes": 24 * 2**30},
                     "config": {"quick": False, "channels": 256, "inter_channels": 128,
                                "batch": 1, "sides": [32, 256]}},
            "sections": {"torch": scaling_section(),
                         "detectors": {"variants": detector_variants(),
                                       "requested_size": "800x1088",
                                       "run": {"wall_s": 300.0, "other_cores_busy": 0.5}}}}


def test_table():
    assert report.table(["a", "b"], [[1, "x"]]).splitlines() == ["| a | b |", "|---|---|",
                                                                 "| 1 | x |"]


def test_format_seconds():
    assert report.format_seconds(0.00123) == "1.23 ms"
    assert report.format_seconds(0.0456) == "45.6 ms"
    assert report.format_seconds(2.5) == "2500 ms"
    assert report.format_seconds(12.34) == "12.3 s"


def test_render_keeps_every_entry_and_the_paper_columns():
    text = report.render(_results())
    section = scaling_section()
    assert text.count("infeasible") >= 2  # NL at N = 65,536, in the tables and the reasons
    assert "needs ~32 GiB" in text and "predicted 22 s per call" in text
    for variant, paper in TABLE_3.items():
        assert variant in text and f"{paper['gflops']:.2f}" in text
    assert "other processes kept 0.10 cores busy" in text
    # Every implementation is a column of the time tables.
    for implementation in {e["implementation"] for e in section["entries"]}:
        assert f"| {implementation} " in text or f" {implementation} |" in text
    assert "targets met" in text


def test_summary_has_one_line_per_target():
    lines = report.summary(_results()).splitlines()
    assert lines[0] == "ENL bench summary"
    assert any("[         met]" in line for line in lines)
    assert len(lines) > 10


def test_report_only_rewrites_report_and_plots(tmp_path, capsys):
    with open(tmp_path / "results.json", "w") as handle:
        json.dump(_results(), handle)
    assert cli.main(["--report-only", "--out", str(tmp_path)]) == 0
    assert "ENL bench summary" in capsys.readouterr().out
    assert (tmp_path / "report.md").read_text().startswith("# ENL bench report")
    for name in ("torch_time.png", "torch_memory.png"):
        assert os.path.getsize(tmp_path / name) > 10_000


def test_readme_snippet(tmp_path, capsys):
    with open(tmp_path / "results.json", "w") as handle:
        json.dump(_results(), handle)
    assert cli.main(["--readme", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "Cost table (paper Table 3), 832x1088" in text
    assert "| 65,536 | forward |" in text and "infeasible" in text
    targets = report.targets_lib.all_targets(_results())
    reported = sum(t.status == "reported" for t in targets)
    assert reported > 0  # the speed-up rows: no goal, not counted as missed
    assert (f"Targets: {sum(t.status == 'met' for t in targets)} of "
            f"{len(targets) - reported} targets met ({reported} more rows reported" in text)
    assert "Training step" not in text  # no training section, no table


def test_readme_snippet_carries_the_training_table(tmp_path, capsys):
    results = _results()
    results["sections"]["training"] = {"variants": training_rows(), "run": {"wall_s": 60.0}}
    with open(tmp_path / "results.json", "w") as handle:
        json.dump(results, handle)
    assert cli.main(["--readme", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "Training step (one SGD step, torch):" in text
    assert "| +3ENL, TD |" in text and "+3.0%" in text and "+4.0%" in text


def test_profiles_of_every_grid_are_rendered():
    def profiled(side, op):
        return {"side": side, "repeats": 3, "total_self_s": 0.5,
                "top": [{"op": op, "share": 0.75, "calls": 6}]}

    section = scaling_section()
    section["profile"] = {"forward": profiled(128, "aten::bmm"),
                          "forward_backward": profiled(128, "aten::mm"),
                          "forward@256": profiled(256, "aten::copy_"),
                          "forward_backward@256": {"error": "N = 65,536: RuntimeError: boom"}}
    text = report.scaling_section("torch", section)
    assert "- forward, N = 16,384, 3 calls, 500 ms in total: `aten::bmm` 75% (6 calls)." in text
    assert "- forward, N = 65,536, 3 calls, 500 ms in total: `aten::copy_` 75%" in text
    assert "- forward + backward: N = 65,536: RuntimeError: boom" in text


def _machine(cpu):
    return {"cpu": cpu, "logical_cores": 2, "memory_bytes": 24 * 2**30, "gpus": []}


def test_record_section_stamps_the_machine_and_keeps_earlier_stamps():
    results = _results()
    results["sections"]["detectors"]["run"]["machine"] = _machine("old cpu")
    results["meta"]["machine"] = _machine("new cpu")
    section = cli.record_section(results, "training", {"variants": [], "run": {"wall_s": 1.0}})
    assert results["sections"]["training"] is section
    assert section["run"] == {"wall_s": 1.0, "machine": _machine("new cpu"),
                              "command": "python -m enl_experiments.bench"}
    assert results["sections"]["detectors"]["run"]["machine"]["cpu"] == "old cpu"
    # A section without a run record (a scaling error) gets one.
    assert cli.record_section(results, "keras", {"error": "boom"})["run"]["machine"]["cpu"] \
        == "new cpu"


def test_one_machine():
    results = _results()
    assert report.one_machine(results)  # nothing recorded: meta stands for all (old results)
    for section in results["sections"].values():
        section.setdefault("run", {})["machine"] = _machine("test cpu")
    assert report.one_machine(results)
    results["sections"]["torch"]["run"]["machine"] = _machine("other cpu")
    assert not report.one_machine(results)
    del results["sections"]["torch"]["run"]["machine"]
    assert not report.one_machine(results)  # recorded and unrecorded: not one machine


def test_readme_names_each_sections_machine_when_they_differ(tmp_path, capsys):
    results = _results()
    results["sections"]["torch"].setdefault("run", {})["machine"] = _machine("cpu A")
    results["sections"]["detectors"]["run"].update(machine=_machine("cpu B"),
                                                    command="python -m x --sections detectors")
    results["meta"]["machine"] = _machine("cpu B")
    text = report.readme(results)
    head = text.splitlines()[0]
    assert head.startswith("Merged from runs on different machines (the last: ")
    assert "torch " in head and "UTC on cpu A (2 logical cores, 24 GiB, no GPU)" in head
    assert "UTC on cpu B (2 logical cores, 24 GiB, no GPU), by `python -m x --sections " in head
    assert ("Sections merged from runs on other machines, each on its own: torch on cpu A"
            in report.render(results))
    # One machine throughout: the header names it once.
    results["sections"]["torch"]["run"]["machine"] = _machine("cpu B")
    head = report.readme(results).splitlines()[0]
    assert head.startswith("Measured by `python -m enl_experiments.bench` on cpu B (2 logical")
    assert " on cpu" not in head.split("sections run at:")[1]
    assert "Sections merged" not in report.render(results)


def test_readme_and_report_only_name_out_when_it_holds_no_results(tmp_path, capsys):
    for flag in ("--readme", "--report-only"):
        assert cli.main([flag, "--out", str(tmp_path / "empty")]) == 2
        error = capsys.readouterr().err
        assert f"bench FAILED: {flag} reads an earlier run" in error
        assert "`--out`" in error and "empty" in error and "results.json" in error
    assert not (tmp_path / "empty").exists()  # nothing created for a report of nothing
