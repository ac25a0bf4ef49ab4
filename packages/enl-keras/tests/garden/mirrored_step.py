"""One train step under MirroredStrategy over 2 logical CPUs vs one device.

Run by ``test_distributed.py`` in its own process: logical devices must be
configured before TensorFlow initialises its runtime. Both replicas get the
same image, so the mirrored step (loss / 2 per replica, gradients summed
across replicas, synchronized batch norm over the two copies) must equal the
single-device step on that image.

Usage: python mirrored_step.py EXPERIMENT OVERRIDES_JSON OUTPUT_DIR
Writes OUTPUT_DIR/{initial,single,mirrored}.npz (weights, in model order)
and OUTPUT_DIR/report.json (losses, replicas, optimizer steps).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

from official.core import exp_factory, task_factory  # noqa: E402

from enl_keras.garden import registry_imports  # noqa: E402, F401


def _save(path, model):
    np.savez(path, *[w.numpy() for w in model.weights])


def main(experiment: str, overrides: dict, output_dir: str) -> None:
    config = exp_factory.get_exp_config(experiment)
    config.override(overrides, is_strict=True)
    task = task_factory.get_task(config.task)
    images, labels = next(iter(task.build_inputs(config.task.train_data)))
    first = tf.nest.map_structure(lambda t: t[:1], (images, labels))  # one image

    def new_model_and_optimizer():
        model = task.build_model()
        return model, task.create_optimizer(config.trainer.optimizer_config, config.runtime)

    single_model, single_optimizer = new_model_and_optimizer()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored_model, mirrored_optimizer = new_model_and_optimizer()
    mirrored_model.set_weights(single_model.get_weights())
    _save(os.path.join(output_dir, "initial.npz"), single_model)

    single_logs = task.train_step(first, single_model, single_optimizer)
    per_replica = strategy.experimental_distribute_values_from_function(lambda _: first)
    mirrored_logs = strategy.run(task.train_step,
                                 args=(per_replica, mirrored_model, mirrored_optimizer))
    _save(os.path.join(output_dir, "single.npz"), single_model)
    _save(os.path.join(output_dir, "mirrored.npz"), mirrored_model)
    report = {
        "num_replicas": strategy.num_replicas_in_sync,
        "use_sync_bn": bool(config.task.model.norm_activation.use_sync_bn),
        "single_loss": float(single_logs["loss"]),
        "replica_losses": [float(v) for v in strategy.experimental_local_results(
            mirrored_logs["loss"])],
        "iterations": [int(single_optimizer.iterations.numpy()),
                       int(mirrored_optimizer.iterations.numpy())],
        "names": [w.name for w in single_model.weights],
    }
    with open(os.path.join(output_dir, "report.json"), "w") as file:
        json.dump(report, file)


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3])
