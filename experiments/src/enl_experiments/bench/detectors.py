"""The cost table (paper Table 3): R50-FPN Faster / Mask R-CNN variants, built
by Model Garden, measured in evaluation mode.

Each variant runs in a fresh process (:func:`measure_variant`, called by the
worker), so its memory high-water is its own: the model is built by the
experiment's task exactly as training would build it (float32, no
checkpoint), its parameters counted, its eval graph traced and handed to
TensorFlow's profiler (:mod:`enl_experiments.bench.tf_flops`), and one eval
forward run on a random image while the memory high-water is watched.

The blocks' own cost is predicted by ``enl_core.cost`` from the built config
(levels, block kind, C, C', dct size), and compared with the profiler's count
as a difference of two graphs: ``profiler(variant) - profiler(baseline)``.

Eval memory is whole-process: the resident high-water of the variant's fresh
process during the forward, above its resident size with the weights loaded
and the graph traced, no forward run (:func:`enl_experiments.bench.measure.host_peak_above`).
TensorFlow's allocator statistic is kept beside it but misses allocations on
CPU (an NL block's affinity, for one). Each figure must be at least the bytes
its largest block holds at once (:func:`blocks_cost`'s ``lower_bound_bytes``),
or the check fails.
"""

from __future__ import annotations

import math
import time

from enl_core import cost, variants
from enl_core.validation import DEFAULT_DCT_SIZE
from enl_experiments.bench import measure
from enl_experiments.bench.cases import FLOAT32_BYTES
from enl_experiments.bench.config import BenchConfig

# The rows, by the paper's label (enl_core.variants).
VARIANTS = tuple(variant.paper_label for variant in variants.VARIANTS.values())

# Bottleneck ResNet: stage L (2..5) outputs 256 * 2^(L-2) channels.
def resnet_stage_channels(level: int) -> int:
    """Output channels of bottleneck ResNet stage ``level`` (res2 = 256 ... res5 = 2048)."""
    if level not in (2, 3, 4, 5):
        raise ValueError(f"`level` must be a ResNet stage 2..5, received {level!r}")
    return 256 * 2 ** (level - 2)


def experiment_name(detector: str, variant: str) -> str:
    """e.g. ``experiment_name("maskrcnn", "+3ENL, TD") == "maskrcnn_resnetfpn_enl_coco"``."""
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {list(VARIANTS)}, received {variant!r}")
    return variants.garden_experiment(variant, detector)


def blocks_cost(model_config, height: int, width: int) -> dict:
    """The (E)NL blocks a built config adds, per ``enl_core.cost``.

    Args:
        model_config: ``task.model`` of the experiment.
        height, width: the (padded) input size.

    Returns:
        ``{"macs", "params", "blocks": [description, ...], "lower_bound_bytes"}``;
        zeros for the baseline. ``lower_bound_bytes`` (float32, one image): the
        largest block's affinity (``affinity_floats``: N x N for NL) with its
        input, both live while ``y`` is computed.
    """
    decoder, backbone = model_config.decoder, model_config.backbone
    total, blocks, live = cost.ZERO, [], [0]
    if decoder.type == "enl_fpn":
        enl_fpn = decoder.enl_fpn
        kind = "enl" if enl_fpn.block == "enl" else "nl_embedded_gaussian"
        per_level = cost.fpn_blocks_cost(
            height, width, block_levels=tuple(enl_fpn.block_levels),
            channels=enl_fpn.num_filters,
            inter_channels=enl_fpn.inter_channels, kind=kind,
            # None in the config means the decoder's defaults (True, DEFAULT_DCT_SIZE).
            position_encoding=(True if enl_fpn.position_encoding is None
                               else enl_fpn.position_encoding),
            dct_size=tuple(DEFAULT_DCT_SIZE if enl_fpn.dct_size is None else enl_fpn.dct_size))
        for level, block in per_level.items():
            total = total + block
            live.append(block_live_floats(block, enl_fpn.num_filters, height, width, level))
            blocks.append(f"{kind} on P{level} {cost.level_shape(height, width, level)}, "
                          f"C={enl_fpn.num_filters}")
    if backbone.type == "resnet_nl":
        resnet_nl = backbone.resnet_nl
        channels = resnet_stage_channels(resnet_nl.nl_level)
        grid = cost.level_shape(height, width, resnet_nl.nl_level)
        block = cost.block_cost(*grid, channels=channels,
                                inter_channels=resnet_nl.nl_inter_channels,
                                kind="nl_embedded_gaussian")
        total = total + block
        live.append(block.affinity_floats + channels * grid[0] * grid[1])
        blocks.append(f"nl_embedded_gaussian in res{resnet_nl.nl_level} {grid}, C={channels}")
    return {"macs": total.macs, "params": total.params, "blocks": blocks,
            "lower_bound_bytes": FLOAT32_BYTES * max(live)}


def block_live_floats(block: cost.BlockCost, channels: int, image_height: int,
                      image_width: int, level: int) -> int:
    """An FPN block's affinity (``enl_core.cost``) plus its C x N input, in floats."""
    height, width = cost.level_shape(image_height, image_width, level)
    return block.affinity_floats + channels * height * width


def measure_variant(detector: str, variant: str, config: BenchConfig, log=print) -> dict:
    """Builds one variant and measures it (runs in its own process; imports TensorFlow)."""
    started = time.perf_counter()
    import tensorflow as tf
    import tf_keras
    from official.core import exp_factory
    from official.vision.modeling import factory

    import enl_keras.garden.registry_imports  # noqa: F401 - registers the ENL experiments
    from enl_experiments.bench import tf_flops

    name = experiment_name(detector, variant)
    height, width = config.padded_image_size
    experiment = exp_factory.get_exp_config(name)
    experiment.task.model.input_size = [height, width, 3]
    experiment.task.init_checkpoint = None  # offline: random weights, same cost
    experiment.runtime.mixed_precision_dtype = "float32"
    result = {"detector": detector, "variant": variant, "experiment": name, "batch": config.batch,
              "input_size": [height, width], "import_s": time.perf_counter() - started}

    # The model the experiment's task builds (MaskRCNNTask.build_model calls
    # this factory), without the task's extra symbolic warm-up call: tracing
    # the eval graph below creates the weights, and on 2 cores that saves ~20 s.
    begin = time.perf_counter()
    model = factory.build_maskrcnn(
        input_specs=tf_keras.layers.InputSpec(shape=[None, height, width, 3]),
        model_config=experiment.task.model)
    forward = tf.function(lambda images, shape: model(images, image_shape=shape,
                                                      training=False))
    concrete = forward.get_concrete_function(
        tf.TensorSpec([config.batch, height, width, 3], tf.float32),
        tf.TensorSpec([config.batch, 2], tf.float32))
    result["build_s"] = time.perf_counter() - begin  # build + trace of the eval graph
    result["params"] = int(model.count_params())
    result["model_cost"] = blocks_cost(experiment.task.model, height, width)
    log(f"[detectors] {name}: built and traced in {result['build_s']:.0f} s, "
        f"{result['params']:,} params")

    gpu = bool(tf.config.list_physical_devices("GPU")) and config.device != "cpu"
    begin = time.perf_counter()
    result["profiler_flops"], result["profiler_flops_by_op"] = tf_flops.graph_flops_by_op(
        concrete.graph)
    result["profile_s"] = time.perf_counter() - begin

    images = tf.random.uniform([config.batch, height, width, 3], 0.0, 255.0, seed=0)
    image_shape = tf.constant([[height, width]] * config.batch, tf.float32)

    def call():
        outputs = concrete(images, image_shape)
        # Touch one output so that every kernel has run before the clock stops.
        return outputs["detection_boxes"].numpy() if "detection_boxes" in outputs else outputs

    # TensorFlow's allocator statistics (GPU; CPU with oneDNN only): its peak
    # during the call includes the weights it holds, like the paper's GPU figure.
    device = "GPU:0" if gpu else "CPU:0"
    stats = measure.tf_allocator_stats(tf, device)
    result.update(device=device, allocator_before_bytes=(
        tf.config.experimental.get_memory_info(device)["current"] if stats else None))
    begin = time.perf_counter()
    if gpu:
        call()
        result["gpu"] = tf.config.experimental.get_device_details(
            tf.config.list_physical_devices("GPU")[0]).get("device_name")
    else:
        # Whole process: high-water during the forward above the resident size
        # with the weights loaded (freed heap returned to the OS first).
        result["loaded_peak_bytes"] = measure.high_water_bytes()  # build + trace, no forward
        result["forward_above_bytes"] = measure.host_peak_above(call, lambda: None)
        result["rss_before_bytes"] = result["process_peak_bytes"] = None
        high_water = measure.high_water_bytes()
        if result["forward_above_bytes"] is not None and high_water is not None:
            result["rss_before_bytes"] = high_water - result["forward_above_bytes"]
            result["process_peak_bytes"] = high_water
    result["allocator_peak_bytes"] = (tf.config.experimental.get_memory_info(device)["peak"]
                                      if stats else None)
    result["forward_s"] = time.perf_counter() - begin  # first call: includes graph optimisation
    result["total_s"] = time.perf_counter() - started
    log(f"[detectors] {name}: {result['profiler_flops'] / 2e9:.1f} GMACs (profiler), forward "
        f"{result['forward_s']:.0f} s, total {result['total_s']:.0f} s")
    return result


def compare(variants: list[dict], tolerance: float = 0.02) -> list[dict]:
    """Adds deltas against each detector's baseline and the profiler / cost-model check.

    Per variant: ``flops_delta`` (profiler, variant - baseline), ``model_flops``
    (2 x enl_core.cost MACs of the blocks), ``agreement`` (their ratio - 1),
    ``params_delta`` (built, variant - baseline) and ``model_params``; with a
    whole-process eval figure, ``memory_delta`` (variant - baseline) and
    ``memory_below_bound`` (the figure is under the blocks' lower bound).
    """
    baselines = {v["detector"]: v for v in variants
                 if v.get("variant") == "baseline" and v.get("status", "ok") == "ok"}
    rows = []
    for variant in variants:
        row = dict(variant)
        base = baselines.get(variant["detector"])
        if base is not None and row.get("status", "ok") == "ok":
            model_flops = 2 * row["model_cost"]["macs"]
            delta = row["profiler_flops"] - base["profiler_flops"]
            row.update(
                flops_delta=delta, model_flops=model_flops,
                flops_ratio=row["profiler_flops"] / base["profiler_flops"],
                params_delta=row["params"] - base["params"],
                params_ratio=row["params"] / base["params"],
                model_params=row["model_cost"]["params"])
            memory, bound = row.get("forward_above_bytes"), row["model_cost"].get(
                "lower_bound_bytes", 0) * row.get("batch", 1)
            if memory is not None:
                row["memory_below_bound"] = memory < bound
                if base.get("forward_above_bytes") is not None:
                    row["memory_delta"] = memory - base["forward_above_bytes"]
            if model_flops:
                row["agreement"] = delta / model_flops - 1.0
                row["agrees"] = math.isfinite(row["agreement"]) and abs(
                    row["agreement"]) <= tolerance
        rows.append(row)
    return rows
