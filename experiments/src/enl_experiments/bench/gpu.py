"""``make bench-gpu``: the first look at ENL on a CUDA machine, in under 8 minutes.

Two parts, each in its own process (torch and TensorFlow never share one):

* ``blocks`` (torch): ENL forward and forward + backward at N = 4,096 ...
  65,536 (C = 256, C' = 128) in float32 and under float16 / bfloat16
  autocast, each timed beside the same-run matmul chain of ENL's own GEMM
  shapes in that dtype (:func:`enl_experiments.bench.scaling.chain_shapes`),
  with its peak device memory above the input;
* ``garden`` (TensorFlow): a few Model Garden training steps of Mask R-CNN
  +3ENL TD (``maskrcnn_resnetfpn_enl_coco``) under ``mixed_float16`` on a
  generated COCO-format data set.

``--dry-run`` runs the same code on CPU at a tiny size (N <= 256, C = 16,
ResNet-18 at 128 px, one step), so the script is tested where no GPU is.
Without ``--dry-run`` a missing CUDA device is an error, not a CPU run.

    python -m enl_experiments.bench.gpu [--dry-run] [--out results/bench-gpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from enl_experiments.bench.config import BLOCK_MODES, BenchConfig

DTYPES = ("float32", "float16", "bfloat16")
SIDES = (64, 128, 256)  # N = 4,096 .. 65,536
DRY_SIDES = (8, 16)
EXPERIMENT = "maskrcnn_resnetfpn_enl_coco"
GARDEN_STEPS = 5  # timed, after one step that traces
PART_TIMEOUT_S = {"blocks": 200, "garden": 240}  # with start-up: within 8 minutes
DRY_RUN_TIMEOUT_S = 900  # per part: a shared CPU traces Mask R-CNN slowly


def block_config(dry_run: bool) -> BenchConfig:
    """C, C' and grid sides of the block part."""
    if dry_run:
        return BenchConfig(sides=DRY_SIDES, channels=16, inter_channels=8, warmup_s=0.01,
                           entry_budget_s=0.02, min_repeats=1, max_repeats=2)
    return BenchConfig(sides=SIDES, warmup_s=0.2, entry_budget_s=0.5, min_repeats=3,
                       max_repeats=20)


def run_blocks(dry_run: bool) -> list[dict]:
    """ENL and its matmul chain per dtype, N and mode (imports torch)."""
    import torch

    import enl_torch
    from enl_experiments.bench import cases, measure, scaling
    from enl_experiments.bench.torch_backend import with_backward

    if not dry_run and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device visible to torch; `--dry-run` runs on CPU")
    device = torch.device("cpu" if dry_run else "cuda")
    config = block_config(dry_run)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def peak_above(call):
        if device.type != "cuda":
            return measure.host_peak_above(call, sync)
        sync()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        call()
        sync()
        return torch.cuda.max_memory_allocated(device) - before

    rows = []
    module = enl_torch.ENL(config.channels, config.inter_channels, zero_init=False).to(device)
    for dtype_name in DTYPES:
        dtype = getattr(torch, dtype_name)
        for side in config.sides:
            x = torch.randn(1, config.channels, side, side, device=device)
            for mode in BLOCK_MODES:
                backward = mode == "forward_backward"
                inputs = x.clone().requires_grad_(backward)
                upstream = torch.randn_like(x)

                def forward(inputs=inputs, backward=backward, dtype=dtype):
                    with torch.set_grad_enabled(backward), torch.autocast(
                            device.type, dtype=dtype, enabled=dtype != torch.float32):
                        return module(inputs)

                # The scaling bench's call: gradients dropped at its end, so that
                # the measured peak does not reuse the last call's.
                call = (with_backward(forward, upstream, (inputs,), module) if backward
                        else forward)

                shapes = scaling.chain_shapes(side, mode, config)
                products = [(torch.randn(m, k, device=device, dtype=dtype),
                             torch.randn(k, n, device=device, dtype=dtype))
                            for m, k, n in shapes]

                def chain(products=products):
                    for a, b in products:
                        torch.matmul(a, b)

                block_s, chain_s = measure.interleaved_times(
                    [call, chain], sync, config.warmup_s, config.entry_budget_s,
                    config.min_repeats, config.max_repeats)
                macs = cases.case_macs("enl", side, config, mode)
                chain_macs = sum(m * k * n for m, k, n in shapes)
                block_median, chain_median = sorted(block_s)[len(block_s) // 2], sorted(
                    chain_s)[len(chain_s) // 2]
                rows.append({
                    "dtype": dtype_name, "n": side * side, "mode": mode,
                    "median_s": block_median, "tflops": 2 * macs / block_median / 1e12,
                    "chain_tflops": 2 * chain_macs / chain_median / 1e12,
                    "efficiency": (macs / block_median) / (chain_macs / chain_median),
                    "peak_above_bytes": peak_above(call),
                    "input_bytes": x.numel() * x.element_size(),
                    "floor_bytes": cases.enl_floor_bytes(side, config, mode)})
                del products
    return rows


def garden_overrides(dry_run: bool, train_pattern: str, image_size: int) -> dict:
    """The experiment's own architecture (ENL at P5-P3, ResNet-50) on the generated
    data; the dry run shrinks it to ResNet-18, 64 FPN filters and few proposals."""
    data = {"input_path": train_pattern, "global_batch_size": 1 if dry_run else 2,
            "is_training": True, "shuffle_buffer_size": 2,
            "parser": {"aug_rand_hflip": False, "aug_scale_min": 1.0, "aug_scale_max": 1.0}}
    model = {"input_size": [image_size, image_size, 3], "num_classes": 4}
    if dry_run:
        model.update({"backbone": {"resnet": {"model_id": 18}},
                      "decoder": {"enl_fpn": {"num_filters": 64}},
                      "rpn_head": {"num_filters": 64},
                      "detection_head": {"num_filters": 64, "num_convs": 1, "fc_dims": 128},
                      "roi_generator": {"pre_nms_top_k": 256, "num_proposals": 32},
                      "roi_sampler": {"num_sampled_rois": 48},
                      "mask_head": {"num_filters": 64, "num_convs": 1},
                      "mask_sampler": {"num_sampled_masks": 8}})
    # Model Garden names the dtype; "float16" sets Keras's mixed_float16 policy.
    return {"runtime": {"mixed_precision_dtype": "float16", "enable_xla": False},
            "task": {"init_checkpoint": None, "model": model, "train_data": data}}


def run_garden(dry_run: bool, work_dir: str) -> list[dict]:
    """Model Garden +3ENL TD training steps under mixed_float16 (imports TensorFlow)."""
    import tensorflow as tf
    import tf_keras
    from official.core import exp_factory, task_factory
    from official.modeling import performance

    import enl_keras.garden.registry_imports  # noqa: F401 - registers the ENL experiments
    from enl_experiments.dataset import generate_dataset
    from enl_keras.garden.data import convert_coco_folder

    gpus = tf.config.list_physical_devices("GPU")
    if not dry_run and not gpus:
        raise RuntimeError("no GPU visible to TensorFlow; `--dry-run` runs on CPU")
    image_size = 128 if dry_run else 640
    generate_dataset(work_dir, num_train=2 if dry_run else 4, num_val=0,
                     image_size=image_size, seed=0)
    convert_coco_folder(work_dir, splits=("train",), num_shards=1)
    config = exp_factory.get_exp_config(EXPERIMENT)
    config.override(garden_overrides(dry_run, os.path.join(work_dir, "tfrecords", "train-*"),
                                     image_size), is_strict=False)
    performance.set_mixed_precision_policy(config.runtime.mixed_precision_dtype)
    task = task_factory.get_task(config.task)
    model = task.build_model()
    optimizer = task.create_optimizer(config.trainer.optimizer_config, config.runtime)
    batches = iter(task.build_inputs(config.task.train_data).repeat())
    step = tf.function(lambda batch: task.train_step(batch, model, optimizer, metrics=None))
    begin = time.perf_counter()
    first = float(step(next(batches))["loss"])
    trace_s = time.perf_counter() - begin
    times, losses = [], []
    for _ in range(1 if dry_run else GARDEN_STEPS):
        batch = next(batches)
        begin = time.perf_counter()
        losses.append(float(step(batch)["loss"]))  # float(): the step has finished
        times.append(time.perf_counter() - begin)
    device = "GPU:0" if gpus and not dry_run else "CPU:0"
    memory = tf.config.experimental.get_memory_info(device) if gpus else {}
    return [{"experiment": EXPERIMENT, "policy": tf_keras.mixed_precision.global_policy().name,
             "image_size": image_size, "batch": config.task.train_data.global_batch_size,
             "first_step_s": trace_s, "step_s": sorted(times)[len(times) // 2],
             "steps": len(times), "losses": [first, *losses],
             "gpu": gpus[0].name if gpus else None, "peak_bytes": memory.get("peak")}]


def _block_row(row: dict) -> str:
    peak = row["peak_above_bytes"]
    ratio = "n/a" if peak is None else f"{peak / row['floor_bytes']:.2f}"
    return (f"| {row['dtype']} | {row['n']:,} | {row['mode']} | "
            f"{row['median_s'] * 1e3:.2f} | {row['tflops']:.2f} | "
            f"{row['chain_tflops']:.2f} | {row['efficiency']:.0%} | {ratio} |")


def _garden_row(row: dict) -> str:
    peak = "n/a" if row["peak_bytes"] is None else f"{row['peak_bytes'] / 2**20:,.0f}"
    losses = ", ".join(f"{loss:.3f}" for loss in row["losses"])
    return (f"| {row['policy']} | {row['image_size']} | {row['batch']} | "
            f"{row['first_step_s']:.1f} | {row['step_s']:.2f} | {losses} | {peak} |")


def format_table(blocks: list[dict] | dict, garden: list[dict] | dict) -> str:
    """The compact table printed at the end (and written as table.md)."""
    sections = [
        ("ENL on the device: block bench (C = 256, C' = 128; dry run: C = 16)",
         "| dtype | N | pass | time ms | TFLOP/s | chain TFLOP/s | efficiency | "
         "peak above input / floor |", 8, blocks, _block_row),
        ("Model Garden Mask R-CNN +3ENL TD training steps",
         "| policy | image | batch | first step s | step s (median) | losses | peak MiB |",
         7, garden, _garden_row)]
    lines = []
    for title, header, columns, rows, format_row in sections:
        lines += ([""] if lines else []) + [title, "", header, "|---" * columns + "|"]
        if isinstance(rows, dict):
            lines.append(f"| error: {rows['error']} |")
        else:
            lines += [format_row(row) for row in rows]
    return "\n".join(lines)


def _part(name: str, dry_run: bool, out_dir: str) -> list[dict] | dict:
    """Runs one part in a fresh process; its rows, or ``{"error": ...}``."""
    out_path = os.path.join(out_dir, f"{name}.json")
    command = [sys.executable, "-m", "enl_experiments.bench.gpu", "--part", name,
               "--out", out_dir] + (["--dry-run"] if dry_run else [])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    timeout_s = DRY_RUN_TIMEOUT_S if dry_run else PART_TIMEOUT_S[name]
    try:
        completed = subprocess.run(command, env=env, capture_output=True, text=True,
                                   timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"{name} killed after {timeout_s} s"}
    if completed.returncode != 0:
        tail = " | ".join((completed.stdout + completed.stderr).strip().splitlines()[-3:])
        return {"error": f"{name} exited with {completed.returncode}: {tail}"}
    with open(out_path) as handle:
        return json.load(handle)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m enl_experiments.bench.gpu",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="the same code paths on CPU at a tiny size")
    parser.add_argument("--out", default=os.path.join("results", "bench-gpu"))
    parser.add_argument("--part", choices=("blocks", "garden"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.part:  # inside the child process
        if args.part == "blocks":
            rows = run_blocks(args.dry_run)
        else:
            with tempfile.TemporaryDirectory() as work_dir:
                rows = run_garden(args.dry_run, work_dir)
        with open(os.path.join(args.out, f"{args.part}.json"), "w") as handle:
            json.dump(rows, handle, indent=1)
        return 0
    started = time.perf_counter()
    blocks = _part("blocks", args.dry_run, args.out)
    garden = _part("garden", args.dry_run, args.out)
    text = format_table(blocks, garden)
    text += f"\n\nTotal {time.perf_counter() - started:.0f} s" + (
        " (dry run on CPU: no figure here means anything)" if args.dry_run else "")
    with open(os.path.join(args.out, "table.md"), "w") as handle:
        handle.write(text + "\n")
    print(text)
    return 1 if isinstance(blocks, dict) or isinstance(garden, dict) else 0


if __name__ == "__main__":
    sys.exit(main())
