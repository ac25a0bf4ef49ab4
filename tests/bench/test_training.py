"""The training-mode detector table's logic (enl_experiments.bench.training); not timings."""

import importlib.util
import json
import math
import statistics
import subprocess
import sys

import pytest
from results_factory import training_rows

from enl_core import cost
from enl_experiments.bench import report, targets, training
from enl_experiments.bench.config import GIB, BenchConfig


def test_lower_bound_is_the_saved_affinities():
    """+3NL TD at 800 x 1088: P3 (100 x 136), P4 (50 x 68), P5 (25 x 34) affinities,
    all saved for the backward, plus the P3 input."""
    sizes = [100 * 136, 50 * 68, 25 * 34]
    expected = 4 * (sum(n * n for n in sizes) + 256 * sizes[0])
    assert training.lower_bound_bytes("+3NL, TD", 800, 1088) == expected
    assert training.lower_bound_bytes("baseline", 800, 1088) == 0
    enl = training.lower_bound_bytes("+3ENL, TD", 800, 1088)
    assert enl == 4 * (3 * 128 * 128 + 256 * sizes[0])
    bu = training.lower_bound_bytes("+1NL, BU", 800, 1088)
    assert bu == 4 * (50 * 68) ** 2 + 4 * 1024 * 50 * 68


def test_prediction_sums_the_blocks_and_decides_feasibility():
    one = cost.block_cost(100, 136, 256, kind="nl_embedded_gaussian")
    assert training.predicted_block_bytes("+3NL, TD", 800, 1088) > 4 * 4 * one.peak_floats
    assert training.feasibility("+3NL, TD", 800, 1088, 24 * GIB, None) == ("run", "")
    status, reason = training.feasibility("+3NL, TD", 1600, 2176, 24 * GIB, None)
    assert status == "infeasible" and "GiB > 24 GiB" in reason, reason
    status, reason = training.feasibility("+3NL, TD", 800, 1088, 24 * GIB, 2 * GIB)
    assert status == "skipped" and "free now" in reason
    with pytest.raises(ValueError, match="variant"):
        training.block_costs("+5ENL", 800, 1088)


def test_overheads_met_and_not_met():
    met = targets.training_targets(training_rows(1.03, 1.04))
    assert [t.status for t in met] == ["met", "met", "met"], met
    assert met[0].measured == "+3.0%" and met[1].measured == "+4.0%"
    missed = targets.training_targets(training_rows(1.08, 1.04))
    assert [t.status for t in missed[:2]] == ["not met", "met"]


def test_step_memory_below_the_saved_affinities_fails():
    """+3NL TD saves ~800 MB of affinities; a 500 MB figure missed allocations."""
    rows = training_rows(nl_td_above=500 * 2**20)
    assert training.below_bound(rows) == ["+3NL, TD"]
    target = targets.training_targets(rows)[2]
    assert target.status == "not met" and "+3NL, TD 500 >=" in target.measured
    assert training.below_bound(training_rows()) == []


def test_infeasible_variant_is_reported_with_its_size():
    rows = training_rows()
    rows[3] = {"variant": "+3NL, TD", "status": "infeasible", "input_size": [800, 1088],
               "reason": "blocks need ~30.0 GiB > 24 GiB device memory (enl_core.cost model)",
               "lower_bound_bytes": 1, "predicted_block_bytes": 30 * GIB}
    text = report.training_section({"variants": rows, "run": {"wall_s": 1.0}})
    assert "infeasible: blocks need ~30.0 GiB" in text and "30,720" in text
    assert [t.status for t in targets.training_targets(rows)] == ["met", "met", "met"]


def test_missing_enl_row_is_not_measured():
    rows = [r for r in training_rows() if r["variant"] != "+3ENL, TD"]
    found = targets.training_targets(rows)
    assert [t.status for t in found[:2]] == ["not measured", "not measured"]
    all_found = targets.all_targets({"sections": {}})
    assert any(t.name.startswith("[training]") and t.status == "not measured"
               for t in all_found)


def test_report_shows_the_median_and_the_range_of_the_steps():
    rows = training_rows()
    rows[0] |= {"step_s": 20.0, "step_times_s": [19.5, 20.0, 23.25]}
    text = report.training_section({"variants": rows, "run": {"wall_s": 1.0}})
    assert "| baseline | 20.0 s (19.5 s-23.2 s, 3 steps) |" in text, text
    assert "same weights, momentum and seed" in text


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc high-water mark")
@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="torchvision")
def test_workers_time_steps_that_do_the_same_work(tmp_path):
    """The real worker (its own process: torchvision is never imported after the
    TensorFlow of other bench tests), at a small size: every timed step starts from
    the same weights, momentum and seed, so its loss is the same to the bit, and the
    first step's memory is at least what the blocks save. +3ENL TD starts from the
    baseline's weights with identity blocks, so its first step has the baseline's
    loss: the same proposals and RoIs, the same head work (it had another before)."""
    config = BenchConfig(image_size=(128, 192), train_steps=2, device="cpu")
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config.to_json()))
    rows = {}
    for variant in ("baseline", "+3ENL, TD"):
        out = tmp_path / f"{variant}.json"
        subprocess.run([sys.executable, "-m", "enl_experiments.bench.worker", "training",
                        "--variant", variant, "--config", str(config_path), "--out", str(out)],
                       check=True, timeout=600)
        rows[variant] = row = json.loads(out.read_text())
        assert row["status"] == "ok" and row["input_size"] == [128, 192]
        assert len(row["step_times_s"]) == 2 and len(row["step_losses"]) == 2
        assert row["step_losses"][0] == row["step_losses"][1], row["step_losses"]
        assert row["step_s"] == statistics.median(row["step_times_s"])
    assert rows["+3ENL, TD"]["step_above_bytes"] >= rows["+3ENL, TD"]["lower_bound_bytes"] > 0
    first = [rows[v]["first_step_loss"] for v in rows]
    assert first[0] == pytest.approx(first[1], rel=1e-6, abs=0.0), first


def test_model_garden_table_and_targets_say_what_they_measured():
    rows = training_rows()
    text = report.training_section({"variants": rows, "run": {"wall_s": 1.0}}, "keras")
    assert "Model Garden" in text and "fixed counts" in text
    assert "momentum and seed" not in text  # torch's restore-the-weights rule
    names = [t.name for t in targets.training_targets(rows, "training_garden")]
    assert names and all(name.startswith("[training_garden] ") for name in names)
    results = {"sections": {"training_garden": {"variants": rows, "run": {"wall_s": 1.0}}}}
    assert "[training_garden] +3ENL TD step time over the baseline (Mask R-CNN step)" in [
        t.name for t in targets.all_targets(results)]


@pytest.mark.garden
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc high-water mark")
@pytest.mark.skipif(importlib.util.find_spec("official") is None, reason="Model Garden")
def test_model_garden_worker_runs_a_real_training_step(tmp_path):
    """The real Model Garden worker (own process), +3ENL TD at a small size: the
    registered experiment's blocks are counted against the cost model, a step
    runs, and its memory is at least what the blocks save."""
    config = BenchConfig(image_size=(128, 192), train_steps=1, device="cpu")
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config.to_json()))
    out = tmp_path / "row.json"
    subprocess.run([sys.executable, "-m", "enl_experiments.bench.worker", "training",
                    "--framework", "keras", "--variant", "+3ENL, TD", "--config",
                    str(config_path), "--out", str(out)], check=True, timeout=900)
    row = json.loads(out.read_text())
    assert row["status"] == "ok" and row["framework"] == "keras"
    assert row["experiment"] == "maskrcnn_resnetfpn_enl_coco" and row["input_size"] == [128, 192]
    assert len(row["step_times_s"]) == 1 and all(map(math.isfinite, row["step_losses"]))
    assert row["step_above_bytes"] >= row["lower_bound_bytes"] > 0
