"""``python -m enl_keras.garden.train``: Model Garden's trainer, end to end.

A separate process, as a user runs it: a registered ENL experiment, a YAML
``--config_file`` plus ``--params_override``, ``--mode train_and_eval`` on the
generated TFRecords, writing orbit checkpoints, TensorBoard summaries and COCO
box and mask metrics (pycocotools).
"""

from __future__ import annotations

import json
import os
import sys

import pytest

pytestmark = pytest.mark.garden

yaml = pytest.importorskip("yaml")

EXPERIMENT = "maskrcnn_resnetfpn_enl_coco"
COCO_TAGS = ("AP", "APs", "APm", "APl", "mask_AP", "mask_APs", "mask_APm", "mask_APl")


def _scalars(event_dir):
    import tensorflow as tf

    values = {}
    for name in sorted(os.listdir(event_dir)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(event_dir, name)):
            for value in event.summary.value:
                number = (tf.make_ndarray(value.tensor) if value.HasField("tensor")
                          else value.simple_value)
                values.setdefault(value.tag, []).append((event.step, float(number)))
    return values


def background_command(coco, tiny_overrides, workdir):
    """The command, started with the session (see conftest, "background")."""
    config_file = workdir / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(tiny_overrides(EXPERIMENT, coco)))
    trainer = {"trainer": {"train_steps": 2, "steps_per_loop": 1, "summary_interval": 1,
                           "checkpoint_interval": 2, "validation_interval": 2,
                           "validation_steps": 1}}
    return [sys.executable, "-m", "enl_keras.garden.train", f"--experiment={EXPERIMENT}",
            f"--config_file={config_file}", f"--params_override={json.dumps(trainer)}",
            "--mode=train_and_eval", f"--model_dir={workdir / 'model'}",
            "--enable_async_checkpointing=false"]


def test_train_and_eval_writes_checkpoints_and_coco_metrics(background_jobs):
    job = background_jobs[__name__]
    returncode, stderr = job.wait()
    assert returncode == 0, stderr
    model_dir = job.workdir / "model"

    params = yaml.safe_load((model_dir / "params.yaml").read_text())
    assert params["task"]["model"]["decoder"]["type"] == "enl_fpn"
    assert params["task"]["model"]["decoder"]["enl_fpn"]["block_levels"] == [5, 4, 3]
    assert params["trainer"]["train_steps"] == 2
    assert (model_dir / "ckpt-2.index").exists()

    train = _scalars(model_dir / "train")
    assert [step for step, _ in train["total_loss"]] == [1, 2]
    validation = _scalars(model_dir / "validation")
    for tag in COCO_TAGS:
        (step, value), = validation[tag]
        assert step == 2 and -1.0 <= value <= 1.0, (tag, value)
