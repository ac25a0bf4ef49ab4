"""The whole main job at a tiny budget, so that `make experiment` cannot silently rot.

Runs ``python -m enl_experiments.main --profile tiny`` (the strip dataset at
64 x 256 px with its counterfactual twins, 8 training images, 4 steps per
model) in a child process, exactly as ``make experiment`` does, and checks the
results folder it leaves: the models' metrics, the twins' metrics, the flip
rates and every figure. The default suite runs all three variants on the torch
mirror (about 2 minutes) and baseline + ENL on Model Garden (whose per-model
start-up dominates a tiny run); all three on Model Garden is marked slow. The test
process imports neither TensorFlow nor torch: the job runs each framework in
its own processes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from enl_core.coco import METRICS, find_dataset
from enl_experiments.main import context_eval

FIGURES = ("loss_curves.png", "ap_bars.png", "detections.png", "attention.png",
           "dct_filters.png", "context_reach.png")
MODELS = ("baseline", "1nl_bu", "3enl_td")


def _run_tiny(tmp_path, framework: str, variants: str = ""):
    command = [sys.executable, "-m", "enl_experiments.main", "--profile", "tiny",
               "--framework", framework, "--data-dir", str(tmp_path / "data"),
               "--results-dir", str(tmp_path / "results"), "--run-name", "tiny"]
    if variants:
        command += ["--variants", variants]
    result = subprocess.run(command, capture_output=True, text=True, timeout=2400)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result, tmp_path / "results" / "tiny"


def _check_results(result, run_dir, levels_and_grids, models=MODELS):
    assert "| box AP |" in result.stdout
    if models == MODELS:
        assert ("| metric | baseline | +1NL BU | +3ENL TD | Δ +1NL BU | Δ +3ENL TD |"
                in result.stdout)
    else:
        assert "| metric | baseline | +3ENL TD | Δ +3ENL TD |" in result.stdout
    summary = (run_dir / "summary.md").read_text()
    assert "## Counterfactual twins" in summary and "## Flip rate" in summary
    assert "## What context is worth on the scenes" in summary
    assert "## Score AUC by the distance to the deciding object" in summary
    for name in ("summary.md", "metrics.json", *FIGURES):
        assert (run_dir / name).stat().st_size > 0, name
    assert not list(run_dir.parent.glob(".incomplete-*"))
    assert (run_dir.parent / "latest").resolve() == run_dir.resolve()
    document = json.loads((run_dir / "metrics.json").read_text())
    assert set(document["per_seed"]) == set(models)
    for model in models:
        (evaluation,) = document["per_seed"][model]
        (context,) = document["context"][model]
        for scored in (evaluation, context["twin"]):
            for iou_type in ("bbox", "segm"):
                for metric in METRICS:
                    value = scored[iou_type][metric]
                    assert value is None or 0.0 <= value <= 100.0
        flips = context["flip"]["all"]
        assert flips["n"] > 0 and 0 <= flips["flipped"] <= flips["n"]
        assert sum(b["n"] for b in context["flip"]["by_distance"]) == flips["n"]
        assert set(context["flip"]["per_category"]) == {"swimmer", "buoy"}
        worth = context["worth"]
        assert worth["ap"] == {name: evaluation["bbox"]["per_category"][name]
                               for name in ("swimmer", "buoy")}
        for name, value in worth["perfect"].items():  # dropping look-alikes cannot hurt
            assert value is None or value >= (worth["ap"][name] or 0.0)
        assert all(v is None or 0.0 <= v <= 1.0 for v in worth["auc"].values())
        assert set(worth["auc_distance"]) == {"swimmer", "buoy"}
        assert all(b["auc"] is None or 0.0 <= b["auc"] <= 1.0
                   for bins in worth["auc_distance"].values() for b in bins)
    assert set(document["context_blind"]) == {"swimmer", "buoy"}
    # The labels' digest, for worth's re-scoring check (context_eval.labels_digest).
    data = find_dataset(document["meta"]["data"], "train2017", "val2017")
    assert document["meta"]["data_sha256"] == context_eval.labels_digest(data)
    with np.load(run_dir / "runs" / "3enl_td-seed0" / "attention.npz") as arrays:
        maps = {key: arrays[key] for key in arrays.files if key.endswith("_map")}
    grids = sorted(m.shape for m in maps.values())
    assert grids == sorted(levels_and_grids)
    assert all(np.all(np.isfinite(m)) for m in maps.values())


@pytest.mark.garden
def test_tiny_experiment_model_garden_baseline_and_enl(tmp_path):
    result, run_dir = _run_tiny(tmp_path, "garden", "3enl_td")
    # 64 x 256 px input: ENL on P5, P4, P3 sees 2x8, 4x16 and 8x32 grids.
    _check_results(result, run_dir, [(2, 8), (4, 16), (8, 32)], ("baseline", "3enl_td"))
    assert (run_dir / "runs" / "3enl_td-seed0" / "model" / "params.yaml").exists()
    # The trained models' effective reach, from their Model Garden checkpoints.
    for variant in ("baseline", "3enl_td"):
        command = [sys.executable, "-m", "enl_experiments.main.erf_garden", "--model-dir",
                   str(run_dir / "runs" / f"{variant}-seed0" / "model"), "--variant", variant,
                   "--count", "2", "--position", "0.125"]
        erf = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert erf.returncode == 0, erf.stderr[-3000:]
        reach = json.loads(erf.stdout)
        assert reach["images"] == 2 and reach["beyond_px"] == 225.5
        assert sorted(k for k in reach if k.startswith("P")) == ["P2", "P3", "P4", "P5"]
        for level in ("P2", "P3", "P4", "P5"):
            r = reach[level]
            assert 0 <= r["fraction_0.5"] <= r["fraction_0.9"] <= r["fraction_0.99"]
            assert r["fraction_0.99"] <= r["farthest"] < 256 and 0.0 <= r["mass_beyond"] <= 1.0
        if variant == "baseline":
            # Convolutions only: next to nothing beyond P2's theoretical reach of 225.5 px
            # (what is there comes from the offset of nearest upsampling).
            assert reach["P2"]["mass_beyond"] < 0.01


@pytest.mark.garden
@pytest.mark.slow
def test_tiny_experiment_model_garden(tmp_path):
    result, run_dir = _run_tiny(tmp_path, "garden")
    _check_results(result, run_dir, [(2, 8), (4, 16), (8, 32)])


def test_tiny_experiment_torch(tmp_path):
    result, run_dir = _run_tiny(tmp_path, "torch")
    # torchvision keeps 64 x 256 (min_size 64, max_size 256); ENL on P5, P4, P3.
    _check_results(result, run_dir, [(2, 8), (4, 16), (8, 32)])
