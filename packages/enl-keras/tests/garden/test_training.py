"""Training Mask R-CNN + ENL-FPN with Model Garden's task: overfitting and resuming.

One trajectory on the two generated train images, with the experiment's own
optimizer (SGD, momentum 0.9, warmup from 0.0067) plus a global gradient-norm
clip: the losses fall, and a model restored from the checkpoint written
before the last step takes exactly that step.

Why the clip: overfitting two 128 px images, the ENL output kernels carry most
of the gradient norm in the first steps (ENL's affinity term is cubic in its
input, and FPN features are not normalised before the blocks); without a clip
the gradient norm spikes and some runs reach NaN after ~15 steps, while
Model Garden's baseline FPN trains smoothly. ``global_clipnorm`` is Model
Garden's own optimizer option (``trainer.optimizer_config.optimizer.sgd``).

Why the seeds: the trajectory was once drawn from unseeded weights, and one
CI run drew a start whose loss spiked in mid-run (5.6 -> 7.3 -> 3.5), failing
the fall check by a few percent. Now the weights and the batch are drawn with
fixed seeds; with seeds 0-5 the mean of the last three losses was 0.49-0.69x
that of the first three (16 steps, measured 2026-12-07), against the check's
0.8.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from enl_core.testing import assert_close

pytestmark = pytest.mark.garden

tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")

EXPERIMENT = "maskrcnn_resnetfpn_enl_coco"
STEPS = 16
CLIP_NORM = 10.0
TRAJECTORY_SEED = 0


def _optimizer(task, config):
    optimizer_config = copy.deepcopy(config.trainer.optimizer_config)
    optimizer_config.override({"optimizer": {"sgd": {"global_clipnorm": CLIP_NORM}}})
    return task.create_optimizer(optimizer_config, config.runtime)


def _train_step(task, model, optimizer):
    return lambda batch: task.train_step(batch, model, optimizer, metrics=None)


@pytest.fixture(scope="module")
def trajectory(built_experiments, tmp_path_factory):
    config, task, model = built_experiments(EXPERIMENT)  # weights drawn with a fixed seed
    # The input pipeline's sampling (RPN anchors) and the step's op seeds come
    # from the global seed too: with it fixed here, the trajectory does not
    # depend on the tests that ran before.
    tf_keras.utils.set_random_seed(TRAJECTORY_SEED)
    batch = next(iter(task.build_inputs(config.task.train_data)))  # both train images
    optimizer = _optimizer(task, config)
    step = tf.function(_train_step(task, model, optimizer))
    losses = [float(step(batch)["loss"]) for _ in range(STEPS - 1)]
    checkpoint_dir = tmp_path_factory.mktemp("checkpoint")
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model, optimizer=optimizer),
                                         str(checkpoint_dir), max_to_keep=1)
    path = manager.save(checkpoint_number=STEPS - 1)
    # The last step eagerly, as the restored model will take it (no second trace).
    last = _train_step(task, model, optimizer)(batch)
    losses.append(float(last["loss"]))
    return {"config": config, "task": task, "batch": batch, "losses": losses,
            "checkpoint": path, "weights": [w.numpy() for w in model.weights],
            "iterations": int(optimizer.iterations.numpy())}


def test_losses_are_finite_and_fall_when_overfitting_two_images(trajectory):
    losses = trajectory["losses"]
    assert np.all(np.isfinite(losses)), losses
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def test_restored_checkpoint_takes_the_same_next_step(trajectory):
    config, task = trajectory["config"], trajectory["task"]
    model = task.build_model()  # fresh weights
    optimizer = _optimizer(task, config)
    tf.train.Checkpoint(model=model, optimizer=optimizer).restore(
        trajectory["checkpoint"]).assert_existing_objects_matched()
    assert int(optimizer.iterations.numpy()) == STEPS - 1  # the LR schedule resumes too
    logs = _train_step(task, model, optimizer)(trajectory["batch"])
    assert int(optimizer.iterations.numpy()) == trajectory["iterations"]
    assert_close(float(logs["loss"]), trajectory["losses"][-1], "float32")
    for actual, expected in zip(model.weights, trajectory["weights"], strict=True):
        assert_close(actual.numpy(), expected, "float32", err_msg=actual.name)
