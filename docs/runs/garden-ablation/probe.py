"""Ablation probe for the Model Garden training step (issue 16), as run on 2026-12-04/05.

Not part of the bench: a record of the runs the root README cites. Each call is one fresh
process: the bench worker's training step (``bench.training.measure_garden_variant``:
float32, no checkpoint, batch 1, one generated image) with one part switched.

usage: .venv/bin/python docs/runs/garden-ablation/probe.py MODE HEIGHT WIDTH STEPS
MODE:
  baseline         Model Garden's own maskrcnn_resnetfpn_coco
  conv             the same config converted to enl_keras's task type (with_enl_task) only
  td_identity      the +3ENL TD experiment with each block replaced by an identity layer
  3enl_td          the registered +3ENL TD experiment
  3enl_td_unfused  +3ENL TD with enl_keras.ops.enl(fused=False): TensorFlow's autodiff
  1nl_bu, 3nl_td   the other registered experiments
Prints one RESULT line: build and step times, the first and second steps' resident
high-water above the RSS before them, and the process's maxrss.
"""

import resource
import statistics
import sys
import tempfile
import time

mode, height, width, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
started = time.perf_counter()
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
from official.core import exp_factory, task_factory  # noqa: E402
from official.vision.configs import maskrcnn as garden_maskrcnn  # noqa: E402

import enl_keras.garden.registry_imports  # noqa: E402, F401
from enl_experiments.bench import detectors, measure, training  # noqa: E402
from enl_experiments.dataset import generate_dataset  # noqa: E402
from enl_keras import ops as enl_ops  # noqa: E402
from enl_keras.garden.configs import maskrcnn as enl_configs  # noqa: E402
from enl_keras.garden.data import convert_coco_folder  # noqa: E402
from enl_keras.garden.modeling.decoders import enl_fpn  # noqa: E402

VARIANT = {"3enl_td": "+3ENL, TD", "td_identity": "+3ENL, TD", "3enl_td_unfused": "+3ENL, TD",
           "1nl_bu": "+1NL, BU", "3nl_td": "+3NL, TD"}
if mode == "baseline":
    experiment = garden_maskrcnn.maskrcnn_resnetfpn_coco()
elif mode == "conv":
    experiment = enl_configs.with_enl_task(garden_maskrcnn.maskrcnn_resnetfpn_coco())
else:
    experiment = exp_factory.get_exp_config(detectors.experiment_name("maskrcnn", VARIANT[mode]))
if mode == "td_identity":
    def identity_block(block, level, *args, **kwargs):
        return tf_keras.layers.Activation("linear", name=f"id_{level}")
    enl_fpn.build_block = identity_block
if mode == "3enl_td_unfused":
    fused_enl = enl_ops.enl

    def unfused_enl(*args, **kwargs):
        return fused_enl(*args, **{**kwargs, "fused": False})
    enl_ops.enl = unfused_enl

root = tempfile.mkdtemp(prefix="garden-ablation-")
generate_dataset(root, num_train=1, num_val=0, image_size=(height, width), seed=0)
convert_coco_folder(root, num_shards=1)
experiment.override(training.garden_step_override(root, height, width), is_strict=True)
task = task_factory.get_task(experiment.task)
inputs = next(iter(task.build_inputs(experiment.task.train_data)))
tf.random.set_seed(0)
model = task.build_model()
optimizer = task.create_optimizer(experiment.trainer.optimizer_config, experiment.runtime)
step = tf.function(lambda batch: task.train_step(batch, model, optimizer))
step.get_concrete_function(inputs)
build = time.perf_counter() - started
begin = time.perf_counter()
above1 = measure.host_peak_above(lambda: float(step(inputs)["loss"]), lambda: None)
first = time.perf_counter() - begin
above2 = measure.host_peak_above(lambda: float(step(inputs)["loss"]), lambda: None)
times = []
for _ in range(steps):
    begin = time.perf_counter()
    float(step(inputs)["loss"])
    times.append(time.perf_counter() - begin)
maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"RESULT mode={mode} size={height}x{width} params={model.count_params()} "
      f"build={build:.0f}s first={first:.1f}s median={statistics.median(times):.2f}s "
      f"min={min(times):.2f}s times={[round(t, 2) for t in times]} "
      f"above1={above1 / 2**20:.0f}MiB above2={above2 / 2**20:.0f}MiB "
      f"rss={measure.rss_bytes() / 2**20:.0f}MiB maxrss={maxrss:.0f}MiB "
      f"type={type(task).__module__}.{type(task).__name__}", flush=True)
