"""The same command and seed give the same numbers (both frameworks).

Each test trains the same tiny model twice with one seed in child processes,
exactly as the main job does, and compares what came out: the logged losses
and the COCO metrics of the detections (garden), or the losses and every
trained weight (torch). The test process imports neither TensorFlow nor torch
(torchvision after tensorflow segfaults).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from enl_experiments import context_dataset


def _main(tmp_path, run_name, *extra):
    command = [sys.executable, "-m", "enl_experiments.main", "--profile", "tiny",
               "--variants", "baseline", "--data-dir", str(tmp_path / "data"),
               "--results-dir", str(tmp_path / "results"), "--run-name", run_name, *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    run_dir = tmp_path / "results" / run_name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    out = run_dir / "runs" / "baseline-seed0"
    # Every logged value but the timing.
    losses = {tag: series for tag, series in json.loads((out / "losses.json").read_text()).items()
              if tag != "steps_per_second"}
    detections = [(out / name / "detections.json").read_text() for name in (".", "twin")]
    return metrics, losses, detections


@pytest.mark.garden
@pytest.mark.slow
def test_model_garden_run_repeats_exactly(tmp_path):
    first_metrics, first_losses, first_detections = _main(tmp_path, "first")
    second_metrics, second_losses, second_detections = _main(tmp_path, "second")
    assert first_losses == second_losses and "total_loss" in first_losses
    # Byte for byte: every box, score and mask on the scenes and on the twins.
    assert first_detections == second_detections
    assert first_metrics["per_seed"] == second_metrics["per_seed"]
    assert first_metrics["context"] == second_metrics["context"]


def _torch_train(data_root, out, seed):
    from enl_experiments.main import profiles, runners

    runner = runners.TorchRunner(profiles.get_profile("tiny"))
    data = runners.DataPaths(data_root, data_root / "train2017", data_root / "val2017",
                             data_root / "annotations" / "instances_train2017.json",
                             data_root / "annotations" / "instances_val2017.json", 4,
                             data_root / "tfrecords", (64, 256))
    command = [sys.executable, "-m", "enl_experiments.main.torch_job", "train", "--",
               *runner._args("baseline", data, seed, out), "--batch-size", "2", "--steps", "2",
               "--lr", "0.01", "--warmup-steps", "1", "--log-every", "1", "--no-eval",
               "--threads", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return (out / "model" / "log.jsonl").read_text()


def test_torch_training_repeats_exactly(tmp_path):
    root = tmp_path / "strip"
    context_dataset.generate_dataset(root, num_train=4, num_val=1, image_size=(64, 256), seed=0,
                                     twins=False)
    first = _torch_train(root, tmp_path / "first", 0)
    second = _torch_train(root, tmp_path / "second", 0)
    losses = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
              for line in first.splitlines()]
    assert losses == [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                      for line in second.splitlines()]
    assert [record["step"] for record in losses] == [1, 2]
    compare = ("import sys, torch\n"
               "from enl_torch.training import checkpoint as ckpt\n"
               "a, b = (ckpt.load_checkpoint(ckpt.latest_checkpoint(p))['model'] "
               "for p in sys.argv[1:])\n"
               "assert a.keys() == b.keys()\n"
               "different = [k for k in a if not torch.equal(a[k], b[k])]\n"
               "print(len(a), different)\n"
               "sys.exit(1 if different else 0)\n")
    result = subprocess.run([sys.executable, "-c", compare,
                             str(tmp_path / "first" / "model" / "checkpoints"),
                             str(tmp_path / "second" / "model" / "checkpoints")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
