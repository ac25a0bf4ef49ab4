"""Runs from several sittings merge into the table one run of all the seeds would give."""

from __future__ import annotations

import json

import pytest

from enl_core.coco import METRICS
from enl_experiments.main import context_eval, merge, report

LABELS = {"baseline": "baseline", "3enl_td": "+3ENL TD"}
TITLE = "baseline vs +3ENL TD, Mask R-CNN (garden), strip dataset, context split"


def _evaluation(ap: float) -> dict:
    return {iou: {**{metric: ap for metric in METRICS},
                  "per_category": {"person": ap + 1, "swimmer": ap - 1}}
            for iou in ("bbox", "segm")}


def _flip(rate: float, n: int) -> dict:
    entry = {"rate": rate, "n": n, "flipped": round(rate * n)}
    return {"all": entry, "per_category": {"swimmer": entry},
            "by_distance": [{"low": 0.0, "high": 256.0, **entry},
                            {"low": 256.0, "high": 512.0, "rate": None, "n": 0, "flipped": 0}]}


def _context(ap: float, rate: float) -> dict:
    return {"twin": _evaluation(ap - 2), "flip": _flip(rate, 20), "flip_rule": _flip(rate, 20)}


def _run(tmp_path, name: str, seeds: list[int], **meta_changes) -> tuple:
    """A run folder written by the writer the main job uses; its per-seed inputs."""
    runs = {m: [_evaluation(50 + 10 * i + s) for s in seeds] for i, m in enumerate(LABELS)}
    context = {m: [_context(50 + 10 * i + s, 0.1 * (i + 1) + 0.01 * s) for s in seeds]
               for i, m in enumerate(LABELS)}
    meta = {"title": TITLE, "framework": "garden", "profile": "default", "split": "context",
            "train_steps": "1000 per model and seed", "seeds": seeds, "command": f"cmd {name}",
            "machine": "AMD EPYC", "wall_time": "30.0 min",
            "plateau": {m: [{"relative_change": -0.01 * s} for s in seeds] for m in LABELS},
            **meta_changes}
    folder = tmp_path / name
    folder.mkdir()
    report.write_summary(folder, runs, LABELS, meta, [], extra={"context": context})
    return folder, runs, context


def test_merged_runs_equal_one_run_of_all_seeds(tmp_path):
    first, runs_a, context_a = _run(tmp_path, "a", [0])
    second, runs_b, context_b = _run(tmp_path, "b", [2, 1])
    out = tmp_path / "merged"
    text = merge.merge(out, [second, first])
    document = json.loads((out / "metrics.json").read_text())
    # Seeds in ascending order, whichever run held them.
    assert document["meta"]["seeds"] == [0, 1, 2]
    expected = {m: [runs_a[m][0], runs_b[m][1], runs_b[m][0]] for m in LABELS}
    assert document["per_seed"] == expected
    assert document["aggregate"] == json.loads(json.dumps(
        {m: report.aggregate(expected[m]) for m in LABELS}))
    assert document["aggregate"]["3enl_td"]["bbox"]["AP"]["values"] == [60, 61, 62]
    # The table a 3-seed run prints (mean ± std, paired deltas) and its context sections.
    assert text.startswith(report.comparison_table(
        {m: report.aggregate(expected[m]) for m in LABELS}, LABELS))
    context = {m: [context_a[m][0], context_b[m][1], context_b[m][0]] for m in LABELS}
    sections, _ = context_eval.context_sections(context, LABELS, control=False)
    for title, section in sections:
        assert f"{title}\n\n{section}" in text
    assert "61.0 ± 1.0" in (out / "summary.md").read_text()
    assert (out / "context_reach.png").stat().st_size > 0
    assert document["meta"]["merged_from"] == [str(second), str(first)]


@pytest.mark.parametrize("change, match", [
    ({"seeds": [0]}, "distinct seeds"),
    ({"profile": "long"}, "profile='long'"),
    ({"title": TITLE.replace("context", "control")}, "title="),
])
def test_runs_that_differ_are_refused(tmp_path, change, match):
    first, _, _ = _run(tmp_path, "a", [0])
    change = dict(change)
    second, _, _ = _run(tmp_path, "b", change.pop("seeds", [1]), **change)
    with pytest.raises(ValueError, match=match):
        merge.merge(tmp_path / "merged", [first, second])
    assert not (tmp_path / "merged").exists()


RECORDED = {"num_train": 400, "data_sha256": "ab" * 32}


@pytest.mark.parametrize("key, other", [("num_train", 50), ("data_sha256", "cd" * 32)])
def test_runs_on_other_data_are_refused(tmp_path, key, other):
    first, _, _ = _run(tmp_path, "a", [0], **RECORDED)
    second, _, _ = _run(tmp_path, "b", [1], **{**RECORDED, key: other})
    with pytest.raises(ValueError, match=f"{key}={other!r}"):
        merge.merge(tmp_path / "merged", [first, second])
    assert not (tmp_path / "merged").exists()


def test_a_run_from_before_the_data_was_recorded_still_merges(tmp_path):
    first, _, _ = _run(tmp_path, "a", [0])
    second, _, _ = _run(tmp_path, "b", [1], **RECORDED)
    merge.merge(tmp_path / "merged", [first, second])
    assert json.loads((tmp_path / "merged" / "metrics.json").read_text())["meta"]["seeds"] \
        == [0, 1]


def test_an_unfinished_run_or_a_single_run_is_refused(tmp_path, capsys):
    first, _, _ = _run(tmp_path, "a", [0])
    (tmp_path / ".incomplete-b").mkdir()
    assert merge.main(["--out", str(tmp_path / "m"), str(first),
                       str(tmp_path / ".incomplete-b")]) == 2
    assert "has no metrics.json" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least two"):
        merge.merge(tmp_path / "m", [first])


def test_the_worth_table_and_the_blind_reference_are_merged(tmp_path):
    def worth(ap):
        per = {"swimmer": ap, "buoy": ap + 5}
        return {"ap": per, "perfect": {k: v + 30 for k, v in per.items()},
                "auc": {"swimmer": 0.5, "buoy": 0.52}, "auc_rule": {"swimmer": 0.5, "buoy": 0.5}}

    blind = {"swimmer": report.stats([52.0, 53.0]), "buoy": report.stats([68.0, 69.0])}
    folders, context = [], {m: [] for m in LABELS}
    for name, seed in (("a", 0), ("b", 1)):
        runs = {m: [_evaluation(50 + seed)] for m in LABELS}
        per_seed = {m: [{**_context(50 + seed, 0.1), "worth": worth(40 + 3 * i + seed)}]
                    for i, m in enumerate(LABELS)}
        for m in LABELS:
            context[m] += per_seed[m]
        meta = {"title": TITLE, "framework": "garden", "profile": "default", "split": "context",
                "train_steps": "1000", "seeds": [seed], "command": name, "machine": "m",
                "wall_time": "1 min", "plateau": {m: [None] for m in LABELS}}
        folder = tmp_path / name
        folder.mkdir()
        report.write_summary(folder, runs, LABELS, meta, [],
                             extra={"context": per_seed, "context_blind": blind})
        folders.append(folder)
    text = merge.merge(tmp_path / "merged", folders)
    table = context_eval.worth_table(context, LABELS, False, blind)
    assert table in text and "| +3ENL TD: box AP | 43.5 ± 0.7 | 48.5 ± 0.7 |" in table
    assert "52.5 ± 0.7" in table  # the reference row
    document = json.loads((tmp_path / "merged" / "metrics.json").read_text())
    assert document["context_blind"] == json.loads(json.dumps(blind))
