"""The training-mode detector table: one SGD step of R50-FPN Mask R-CNN in torch.

The paper's cost table is eval-only (it could not train +3NL TD: "exceeds
16GB"). This section times one training step (forward, backward, optimizer)
of ``enl_torch.detection.maskrcnn_enl_resnet_fpn`` at the bench's image size,
batch 1, float32, for the four variants of Table 3, each in a fresh process
(:func:`measure_variant`, called by the worker), and measures its memory the
whole-process way: the resident high-water during the first step above the
resident size with the weights loaded and nothing run (the step's activations,
gradients and the optimizer's momentum buffers). Step time is the median of
the steps after it, each from the same weights and seed (the same work). Every
variant starts from the baseline's weights, its blocks as the identity
(:func:`shared_init_model`), so every variant's first step does the baseline's
work plus its blocks'.

Before a variant runs, ``enl_core.cost`` predicts what its blocks hold for the
backward (:func:`predicted_block_bytes`); above the device memory it is
reported infeasible with that size, never started. After it runs, its figure
must be at least the affinities its blocks saved for the backward
(:func:`lower_bound_bytes`), or the check fails.

This module imports no framework: the worker imports torch inside
:func:`measure_variant`.
"""

from __future__ import annotations

import copy
import statistics
import time

from enl_core import cost
from enl_experiments.bench.cases import FLOAT32_BYTES, MEMORY_FACTOR
from enl_experiments.bench.config import GIB, BenchConfig

# Row label (as the eval table) -> enl_torch.detection variant.
VARIANTS = {"baseline": "baseline", "+1NL, BU": "1nl_bu", "+3ENL, TD": "3enl_td",
            "+3NL, TD": "3nl_td"}
ENL_VARIANT = "+3ENL, TD"
OVERHEAD_MAX = 0.05  # +3ENL TD over the baseline, step time and peak memory
# The paper's layout (Sec. 4.1), what enl_torch.detection builds: (kind, level, C).
# The bottom-up NL sits before the last block of res4 (stride 16, 1,024 channels).
BLOCK_LAYOUT = {
    "baseline": (),
    "+1NL, BU": (("nl_embedded_gaussian", 4, 1024),),
    "+3ENL, TD": tuple(("enl", level, 256) for level in (5, 4, 3)),
    "+3NL, TD": tuple(("nl_embedded_gaussian", level, 256) for level in (5, 4, 3)),
}
NUM_CLASSES = 91  # COCO with background, as the eval table's Model Garden heads


def block_costs(variant: str, height: int, width: int) -> list[tuple[cost.BlockCost, int, int]]:
    """(cost, C, N) of each block of ``variant`` on an H x W image."""
    if variant not in BLOCK_LAYOUT:
        raise ValueError(f"`variant` must be one of {list(BLOCK_LAYOUT)}, received {variant!r}")
    blocks = []
    for kind, level, channels in BLOCK_LAYOUT[variant]:
        grid = cost.level_shape(height, width, level)
        blocks.append((cost.block_cost(*grid, channels=channels, kind=kind,
                                       position_encoding=kind == "enl"),
                       channels, grid[0] * grid[1]))
    return blocks


def predicted_block_bytes(variant: str, height: int, width: int) -> int:
    """What the blocks add to a training step, by the block bench's memory model:
    every block's forward + backward peak (``MEMORY_FACTOR`` x ``peak_floats``,
    plus its output), summed, since a training step keeps every block's saved
    tensors until the backward reaches it."""
    return FLOAT32_BYTES * sum(MEMORY_FACTOR["forward_backward"] * block.peak_floats
                               + channels * n
                               for block, channels, n in block_costs(variant, height, width))


def lower_bound_bytes(variant: str, height: int, width: int) -> int:
    """Bytes a training step of ``variant`` must hold at once for its blocks:
    the affinity each block saves for the backward (N x N for NL), all live
    when the backward starts, plus the largest block's input."""
    blocks = block_costs(variant, height, width)
    if not blocks:
        return 0
    affinities = sum(block.affinity_floats for block, _, _ in blocks)
    return FLOAT32_BYTES * (affinities + max(channels * n for _, channels, n in blocks))


def feasibility(variant: str, height: int, width: int, limit_bytes: int,
                available_bytes: int | None) -> tuple[str, str]:
    """("run" | "infeasible" | "skipped", reason) from the predicted block memory."""
    predicted = predicted_block_bytes(variant, height, width)
    if predicted > limit_bytes:
        return "infeasible", (f"blocks need ~{predicted / GIB:.1f} GiB > "
                              f"{limit_bytes / GIB:.0f} GiB device memory (enl_core.cost model)")
    if available_bytes is not None and predicted > 0.8 * available_bytes:
        return "skipped", (f"blocks need ~{predicted / GIB:.1f} GiB, only "
                           f"{available_bytes / GIB:.1f} GiB free now")
    return "run", ""


def compare(rows: list[dict]) -> list[dict]:
    """Adds ``time_ratio`` / ``memory_ratio`` over the baseline and the lower-bound check."""
    base = next((r for r in rows if r["variant"] == "baseline" and r.get("status") == "ok"),
                None)
    out = []
    for row in rows:
        row = dict(row)
        if row.get("status") == "ok" and row.get("step_above_bytes") is not None:
            row["memory_below_bound"] = row["step_above_bytes"] < row["lower_bound_bytes"]
            if base is not None and base.get("step_above_bytes"):
                row["time_ratio"] = row["step_s"] / base["step_s"]
                row["memory_ratio"] = row["step_above_bytes"] / base["step_above_bytes"]
        out.append(row)
    return out


def below_bound(rows: list[dict]) -> list[str]:
    """Variants whose step memory is under the affinities their blocks must save."""
    return [r["variant"] for r in compare(rows) if r.get("memory_below_bound")]


def overhead_goals(rows: list[dict]) -> list[tuple[str, float | None, str]]:
    """(what, +3ENL TD ratio - 1 or None, why not measured) for step time and memory."""
    enl = next((r for r in compare(rows) if r["variant"] == ENL_VARIANT), None)
    goals = []
    for what, key in (("step time", "time_ratio"), ("peak memory", "memory_ratio")):
        if enl is None or key not in enl:
            why = ("+3ENL TD or the baseline did not run" if enl is None or enl.get(
                "status") == "ok" else f"+3ENL TD {enl['status']}: {enl.get('reason', '')}")
            goals.append((what, None, why))
        else:
            goals.append((what, enl[key] - 1.0, ""))
    return goals


def _synthetic_target(height: int, width: int, torch):
    """Two boxes with masks and labels: enough for every loss of Mask R-CNN."""
    boxes = torch.tensor([[0.1 * width, 0.1 * height, 0.5 * width, 0.6 * height],
                          [0.4 * width, 0.3 * height, 0.9 * width, 0.9 * height]])
    masks = torch.zeros(2, height, width, dtype=torch.uint8)
    for index, (x0, y0, x1, y1) in enumerate(boxes.round().int().tolist()):
        masks[index, y0:y1, x0:x1] = 1
    return {"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks}


def shared_init_model(variant: str, height: int, width: int, torch, builder):
    """The variant's Mask R-CNN with every weight it shares with the baseline set to
    the baseline's (both built from torch seed 0), its blocks initialised on their own.

    Built from one seed alone, a variant's extra blocks take random numbers from the
    stream and every later layer (heads included) starts elsewhere, so its RPN
    proposes other boxes and its heads train on another number of RoIs: its step
    does other work than the baseline's. The blocks start as the identity
    (``zero_init``), so with the baseline's weights the first step of every variant
    sees the baseline's proposals and RoIs and has its loss. The baseline is built
    twice too, so every variant's process has freed the same memory before it runs.

    Raises:
        ValueError: the baseline's weights do not fit the variant beyond its blocks
            (``enl_torch.detection.weights.load_allowing_new_blocks``).
    """
    def build(name):
        torch.manual_seed(0)
        # min_size / max_size equal to the image: torchvision's transform keeps it as is.
        return builder(variant=name, num_classes=NUM_CLASSES, min_size=min(height, width),
                       max_size=max(height, width))

    from enl_torch.detection.builders import NEW_BLOCK_PREFIXES
    from enl_torch.detection.weights import load_allowing_new_blocks

    shared = build("baseline").state_dict()
    model = build(VARIANTS[variant])
    load_allowing_new_blocks(model, shared, NEW_BLOCK_PREFIXES, name="the baseline's weights")
    return model


def _planned_row(variant: str, height: int, width: int, config: BenchConfig, section: str,
                 log, **fields) -> tuple[dict, bool]:
    """A row's predictions and, for a variant that must not run, its final status:
    ``(row, True)`` to go on measuring, ``(row with status and reason, False)``."""
    import psutil

    row = {"variant": variant, **fields, "input_size": [height, width], "batch": 1,
           "predicted_block_bytes": predicted_block_bytes(variant, height, width),
           "lower_bound_bytes": lower_bound_bytes(variant, height, width)}
    status, reason = feasibility(variant, height, width, int(config.memory_limit_gib * GIB),
                                 psutil.virtual_memory().available)
    if status == "run":
        return row, True
    log(f"[{section}] {variant}: {status} ({reason})")
    return row | {"status": status, "reason": reason}, False


def _check_blocks(variant: str, channels: list) -> None:
    """The built model's blocks must be those the cost model counts (by C)."""
    expected = [c for _, _, c in BLOCK_LAYOUT[variant]]
    if sorted(c or 0 for c in channels) != sorted(expected):
        raise RuntimeError(f"{variant}: the built model has blocks with C = {channels}, the "
                           f"cost model expects {expected}")


def measure_variant(variant: str, config: BenchConfig, log=print) -> dict:
    """One training step of one variant (runs in its own process; imports torch)."""
    from enl_experiments.bench import measure

    height, width = config.image_size
    result, runs = _planned_row(variant, height, width, config, "training", log)
    if not runs:
        return result
    started = time.perf_counter()
    import torch

    import enl_torch
    from enl_torch.detection import maskrcnn_enl_resnet_fpn

    model = shared_init_model(variant, height, width, torch, maskrcnn_enl_resnet_fpn)
    model.train()
    blocks = [m for m in model.modules() if isinstance(m, (enl_torch.ENL, enl_torch.NonLocal))]
    _check_blocks(variant, [m.in_channels for m in blocks])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    images = [torch.rand(3, height, width, generator=torch.Generator().manual_seed(0))]
    targets = [_synthetic_target(height, width, torch)]

    def step(seed: int) -> float:
        # The samplers of the RPN and the RoI heads draw from torch's generator:
        # seeded, the same weights give the same proposals, the same sampled
        # RoIs and the same mask-head batch.
        torch.manual_seed(seed)
        optimizer.zero_grad(set_to_none=True)
        losses = model(images, targets)
        loss = sum(losses.values())
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    result["params"] = sum(p.numel() for p in model.parameters())
    result["build_s"] = time.perf_counter() - started
    # Memory of the first step, on the heap of a process that has only loaded
    # its weights: a later step would reuse pages the first one left behind.
    # It includes the momentum buffers the optimizer creates (training state).
    begin = time.perf_counter()
    first: list[float] = []
    result["step_above_bytes"] = measure.host_peak_above(lambda: first.append(step(0)),
                                                         lambda: None)
    result["first_step_s"] = time.perf_counter() - begin
    result["first_step_loss"] = first[0]
    log(f"[training] {variant}: built in {result['build_s']:.0f} s, first step "
        f"{result['first_step_s']:.1f} s, peak above loaded "
        f"{(result['step_above_bytes'] or 0) / 2**20:,.0f} MiB")
    # Every timed step starts from the same weights and momentum (those after
    # the first step, restored outside the timer) with the same seed, so every
    # step does the same work: the spread of the times is the machine's, not a
    # drift of the proposals as the randomly initialised model trains.
    weights = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    times, losses = [], []
    for _ in range(config.train_steps):
        model.load_state_dict(weights)
        optimizer.load_state_dict(optimizer_state)
        begin = time.perf_counter()
        losses.append(step(1))
        times.append(time.perf_counter() - begin)
    result.update(status="ok", step_s=statistics.median(times), step_times_s=times,
                  step_losses=losses, torch_threads=torch.get_num_threads())
    log(f"[training] {variant}: step {result['step_s']:.1f} s (median of {len(times)}, "
        f"{min(times):.1f}-{max(times):.1f} s)")
    return result


def garden_step_override(root: str, height: int, width: int) -> dict:
    """The override that makes a Model Garden experiment the bench's training step:
    float32, no XLA, no checkpoint, input ``height x width``, batch 1 from the
    TFRecords under ``root/tfrecords`` with no augmentation."""
    return {
        "runtime": {"mixed_precision_dtype": "float32", "enable_xla": False},
        "task": {"init_checkpoint": None, "model": {"input_size": [height, width, 3]},
                 "train_data": {"input_path": f"{root}/tfrecords/train-*",
                                "global_batch_size": 1, "dtype": "float32",
                                "shuffle_buffer_size": 1,
                                "parser": {"aug_rand_hflip": False, "aug_scale_min": 1.0,
                                           "aug_scale_max": 1.0}}}}


def measure_garden_variant(variant: str, config: BenchConfig, log=print) -> dict:
    """One Model Garden training step of one variant (own process; imports TensorFlow).

    The variant's registered Mask R-CNN experiment (``enl_core.variants``:
    R50-FPN, its own heads, sampler and optimizer), float32, no checkpoint,
    batch 1 at the padded bench size, fed by the task's own input pipeline
    from TFRecords of one generated image (``enl_experiments.dataset``,
    converted by ``enl_keras.garden.data``), trained by the task's
    ``train_step`` in one ``tf.function``. Model Garden pads the proposals,
    the sampled RoIs and the sampled masks to fixed counts, so every step of
    every variant runs the same shapes: no shared initialisation is needed for
    the same work (torch's heads see as many RoIs as its RPN proposes).
    Memory: the resident high-water of the first step above the resident
    size with the model built, the optimizer made and the step traced.
    """
    import tempfile

    from enl_experiments.bench import detectors as detectors_lib
    from enl_experiments.bench import measure

    height, width = config.padded_image_size
    result, runs = _planned_row(variant, height, width, config, "training_garden", log,
                                framework="keras")
    if not runs:
        return result
    started = time.perf_counter()
    import tensorflow as tf
    from official.core import exp_factory, task_factory

    import enl_keras.garden.registry_imports  # noqa: F401 - registers the ENL experiments
    from enl_experiments.dataset import generate_dataset
    from enl_keras.garden import layers as garden_layers
    from enl_keras.garden.data import convert_coco_folder

    name = detectors_lib.experiment_name("maskrcnn", variant)
    with tempfile.TemporaryDirectory(prefix="enl-bench-garden-") as root:
        generate_dataset(root, num_train=1, num_val=0, image_size=(height, width), seed=0)
        convert_coco_folder(root, num_shards=1)
        experiment = exp_factory.get_exp_config(name)
        experiment.override(garden_step_override(root, height, width), is_strict=True)
        task = task_factory.get_task(experiment.task)
        inputs = next(iter(task.build_inputs(experiment.task.train_data)))
    tf.random.set_seed(0)
    model = task.build_model()
    optimizer = task.create_optimizer(experiment.trainer.optimizer_config, experiment.runtime)
    blocks = [m for m in model.submodules
              if isinstance(m, (garden_layers.ENL, garden_layers.NonLocal))]
    _check_blocks(variant, [m.channels for m in blocks])
    step = tf.function(lambda batch: task.train_step(batch, model, optimizer))
    step.get_concrete_function(inputs)
    result.update(experiment=name, params=int(model.count_params()),
                  build_s=time.perf_counter() - started)
    begin = time.perf_counter()
    first: list[float] = []
    result["step_above_bytes"] = measure.host_peak_above(
        lambda: first.append(float(step(inputs)["loss"])), lambda: None)
    result["first_step_s"] = time.perf_counter() - begin
    result["first_step_loss"] = first[0]
    log(f"[training_garden] {variant}: built and traced in {result['build_s']:.0f} s, first "
        f"step {result['first_step_s']:.1f} s, peak above loaded "
        f"{(result['step_above_bytes'] or 0) / 2**20:,.0f} MiB")
    times, losses = [], []
    for _ in range(config.train_steps):
        begin = time.perf_counter()
        losses.append(float(step(inputs)["loss"]))
        times.append(time.perf_counter() - begin)
    result.update(status="ok", step_s=statistics.median(times), step_times_s=times,
                  step_losses=losses)
    log(f"[training_garden] {variant}: step {result['step_s']:.1f} s (median of {len(times)}, "
        f"{min(times):.1f}-{max(times):.1f} s)")
    return result
