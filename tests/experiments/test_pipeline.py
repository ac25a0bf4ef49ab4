"""The whole main job at a tiny budget, so that `make experiment` cannot silently rot.

Runs ``python -m enl_experiments.main --profile tiny`` (64 px images, 8
training images, 4 steps per model) in a child process, exactly as
``make experiment`` does, and checks the results folder it leaves. The test
process imports neither TensorFlow nor torch: the job runs each framework in
its own processes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from enl_experiments.main.evaluation import METRICS

FIGURES = ("loss_curves.png", "ap_bars.png", "detections.png", "attention.png",
           "dct_filters.png")


def _run_tiny(tmp_path, framework: str):
    command = [sys.executable, "-m", "enl_experiments.main", "--profile", "tiny",
               "--framework", framework, "--data-dir", str(tmp_path / "data"),
               "--results-dir", str(tmp_path / "results"), "--run-name", "tiny"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result, tmp_path / "results" / "tiny"


def _check_results(result, run_dir, levels_and_grids):
    assert "| box AP |" in result.stdout and "+3ENL TD" in result.stdout
    for name in ("summary.md", "metrics.json", *FIGURES):
        assert (run_dir / name).stat().st_size > 0, name
    assert not list(run_dir.parent.glob(".incomplete-*"))
    assert (run_dir.parent / "latest").resolve() == run_dir.resolve()
    document = json.loads((run_dir / "metrics.json").read_text())
    for model in ("baseline", "enl"):
        (evaluation,) = document["per_seed"][model]
        for iou_type in ("bbox", "segm"):
            for metric in METRICS:
                value = evaluation[iou_type][metric]
                assert value is None or 0.0 <= value <= 100.0
    with np.load(run_dir / "runs" / "enl-seed0" / "attention.npz") as arrays:
        maps = {key: arrays[key] for key in arrays.files if key.endswith("_map")}
    grids = sorted(m.shape for m in maps.values())
    assert grids == sorted(levels_and_grids)
    assert all(np.all(np.isfinite(m)) for m in maps.values())


@pytest.mark.garden
def test_tiny_experiment_model_garden(tmp_path):
    result, run_dir = _run_tiny(tmp_path, "garden")
    # 64 px input: ENL on P5, P4, P3 sees 2x2, 4x4 and 8x8 grids.
    _check_results(result, run_dir, [(2, 2), (4, 4), (8, 8)])
    assert (run_dir / "runs" / "enl-seed0" / "model" / "params.yaml").exists()


@pytest.mark.slow
def test_tiny_experiment_torch(tmp_path):
    result, run_dir = _run_tiny(tmp_path, "torch")
    # torchvision resizes to min_size=64; ENL on P5, P4, P3 of the top-down stream.
    _check_results(result, run_dir, [(2, 2), (4, 4), (8, 8)])
