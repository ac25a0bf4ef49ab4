"""Train and evaluate ENL-FPN Faster / Mask R-CNN on a COCO-format folder.

Usage (one process; CPU-sized images)::

    python -m enl_torch.train --data-dir data/beach --output-dir runs/enl \\
        --model maskrcnn_enl_resnet_fpn --backbone resnet50 --variant 3enl_td \\
        [--block-input-norm] [--fpn-channels 256] \\
        [--anchor-sizes 8 16 32 64 128] [--box-head-fc-dims 256] \\
        [--mask-head-channels 64 64] [--model-kwarg box_detections_per_img=50] \\
        --min-size 256 --max-size 256 --batch-size 2 --steps 1000 --lr 0.01 \\
        --checkpoint-every 200 --eval-every 500

Several processes (DDP; gloo on CPU, nccl on GPU)::

    torchrun --standalone --nproc-per-node 2 -m enl_torch.train ...same arguments...

Resume exactly where a run stopped: the same command with ``--resume latest``
(or a checkpoint path). Checkpoints are written atomically, so a run killed at
any point (even while saving) resumes with ``latest`` to the weights the
uninterrupted run reaches, bit for bit; an unreadable checkpoint is named, and
``latest`` skips it with a warning for the newest readable one. Evaluate only:
``--eval-only --weights FILE``.

The data folder is ``annotations/instances_<split>.json`` plus an images
folder per split (``<split>/``, ``images/<split>/`` or ``<split>2017/``);
``--train-split`` / ``--val-split`` default to ``train2017`` / ``val2017``.

Outputs in ``--output-dir``: ``log.jsonl`` (one line per logged step),
``checkpoints/step_NNNNNNN.pt``, ``metrics.json`` (the last evaluation: AP,
AP50, AP75, APs, APm, APl for ``bbox`` and ``segm``) and ``metrics.jsonl``
(every evaluation). Levi & Ullman, BMVC 2019, Sec. 4.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import sys
import time
from typing import Any

import torch
from torch import nn
from torchvision.ops import misc as misc_nn_ops

from enl_core.fpn import BLOCK_NORMS
from enl_torch.data.coco import CocoDetection, find_split
from enl_torch.detection.backbones import BACKBONES, FPN_OUT_CHANNELS
from enl_torch.detection.builders import MODEL_BUILDERS, VARIANTS, builder_kwarg_names
from enl_torch.training import checkpoint as ckpt
from enl_torch.training.distributed import (
    DistributedContext,
    all_gather_objects,
    all_reduce_mean,
    barrier,
    init_distributed,
    shutdown,
)
from enl_torch.training.engine import BatchPlan, rank_micro_batches, train_step
from enl_torch.training.evaluation import evaluate
from enl_torch.training.schedule import warmup_multistep_scheduler

NORM_LAYERS = {"auto": None, "batch": nn.BatchNorm2d, "frozen": misc_nn_ops.FrozenBatchNorm2d}
# Arguments that must not change when a run is resumed (the rest may, e.g. --steps).
RESUME_INVARIANTS = ("model", "backbone", "variant", "block_levels", "block_input_norm",
                     "block_norm",
                     "fpn_channels", "anchor_sizes", "aspect_ratios", "box_head_fc_dims",
                     "mask_head_channels", "model_kwarg", "min_size",
                     "max_size", "norm", "trainable_backbone_layers", "seed", "hflip_prob",
                     "lr", "momentum", "weight_decay", "warmup_steps", "warmup_factor",
                     "lr_milestones", "gamma")
# Checkpoints written before these options existed were trained with their defaults.
INVARIANT_DEFAULTS = {"block_input_norm": False, "block_norm": "batch",
                      "fpn_channels": FPN_OUT_CHANNELS,
                      "anchor_sizes": None, "aspect_ratios": None, "box_head_fc_dims": None,
                      "mask_head_channels": None}


def _model_kwarg(text: str) -> tuple[str, Any]:
    key, separator, value = text.partition("=")
    if not separator or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"--model-kwarg must be KEY=VALUE, received {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m enl_torch.train`` (also used by the experiments)."""
    parser = argparse.ArgumentParser(
        prog="python -m enl_torch.train",
        description="Train / evaluate ENL-FPN Faster or Mask R-CNN (torchvision) on a "
                    "COCO-format dataset; torchrun-compatible (DDP).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", required=True, help="COCO-format folder")
    data.add_argument("--train-split", default="train2017")
    data.add_argument("--val-split", default="val2017")
    data.add_argument("--hflip-prob", type=float, default=0.5)
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=sorted(MODEL_BUILDERS), default="maskrcnn_enl_resnet_fpn")
    model.add_argument("--backbone", choices=sorted(BACKBONES), default="resnet50")
    model.add_argument("--variant", choices=sorted(VARIANTS), default="3enl_td")
    model.add_argument("--block-levels", type=int, nargs="+", default=[5, 4, 3])
    model.add_argument("--block-input-norm", action="store_true",
                       help="TD variants: each FPN block's branch sees a normalised input, "
                            "x + block(n) - n, n = norm(x) (Model Garden's block_input_norm; "
                            "the norm is --block-norm)")
    model.add_argument("--block-norm", choices=BLOCK_NORMS, default="batch",
                       help="the norm of --block-input-norm: batch, or layer (a layer norm "
                            "over channels, no running statistics; Model Garden's block_norm)")
    model.add_argument("--fpn-channels", type=int, default=FPN_OUT_CHANNELS,
                       help="FPN width (the blocks run at it)")
    # Sizes of the detector's parts (default: torchvision's); the scalar ones
    # (RPN top-n, sampled RoIs, detections per image) go through --model-kwarg.
    model.add_argument("--anchor-sizes", type=float, nargs="+", default=None, metavar="PX",
                       help="one anchor size per feature map, P2..P5 and the extra 'pool' "
                            "level (5 for the ResNet-FPN); default torchvision's 32..512")
    model.add_argument("--aspect-ratios", type=float, nargs="+", default=None,
                       help="anchor height/width ratios on every map; default 0.5 1 2")
    model.add_argument("--box-head-fc-dims", type=int, nargs="+", default=None, metavar="DIM",
                       help="box head of FC layers of these widths (e.g. 256: one FC, as "
                            "Model Garden's num_fcs 1); default torchvision's TwoMLPHead 1024")
    model.add_argument("--mask-head-channels", type=int, nargs="+", default=None,
                       metavar="CH", help="mask head 3x3 convs of these widths (e.g. 64 64); "
                                          "default torchvision's 256 x4")
    model.add_argument("--weights", default=None, help="local detector state dict / checkpoint")
    model.add_argument("--weights-backbone", default=None, help="local ImageNet ResNet state dict")
    model.add_argument("--trainable-backbone-layers", type=int, default=None)
    model.add_argument("--norm", choices=sorted(NORM_LAYERS), default="auto",
                       help="backbone norm; auto: frozen with pretrained weights, else batch")
    model.add_argument("--min-size", type=int, default=800)
    model.add_argument("--max-size", type=int, default=1333)
    model.add_argument("--model-kwarg", type=_model_kwarg, action="append", default=[],
                       metavar="KEY=VALUE",
                       help="extra FasterRCNN/MaskRCNN argument, e.g. "
                            "rpn_post_nms_top_n_train=500, box_batch_size_per_image=128, "
                            "box_detections_per_img=50")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--steps", type=int, default=1000, help="optimizer steps in all")
    optim.add_argument("--batch-size", type=int, default=2, help="images per process per forward")
    optim.add_argument("--grad-accumulation", type=int, default=1,
                       help="forwards per process per optimizer step")
    optim.add_argument("--lr", type=float, default=0.02)
    optim.add_argument("--momentum", type=float, default=0.9)
    optim.add_argument("--weight-decay", type=float, default=1e-4)
    optim.add_argument("--warmup-steps", type=int, default=100)
    optim.add_argument("--warmup-factor", type=float, default=0.001)
    optim.add_argument("--lr-milestones", type=int, nargs="*", default=[])
    optim.add_argument("--gamma", type=float, default=0.1)
    optim.add_argument("--clip-grad-norm", type=float, default=None)
    run = parser.add_argument_group("run")
    run.add_argument("--output-dir", required=True)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    run.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    run.add_argument("--workers", type=int, default=0, help="data-loading processes per process")
    run.add_argument("--log-every", type=int, default=1)
    run.add_argument("--checkpoint-every", type=int, default=0,
                     help="steps between checkpoints (0: only at the end)")
    run.add_argument("--resume", default=None, help="checkpoint path, or 'latest'")
    run.add_argument("--eval-every", type=int, default=0,
                     help="steps between evaluations (0: only at the end)")
    run.add_argument("--eval-batch-size", type=int, default=1)
    run.add_argument("--no-eval", action="store_true", help="skip evaluation")
    run.add_argument("--eval-only", action="store_true", help="evaluate --weights and exit")
    run.add_argument("--find-unused-parameters", action="store_true")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    positive = ("steps", "batch_size", "grad_accumulation", "min_size", "max_size",
                "eval_batch_size", "log_every", "fpn_channels")
    for name in positive:
        if getattr(args, name) < 1:
            raise ValueError(f"`--{name.replace('_', '-')}` must be >= 1, received "
                             f"{getattr(args, name)}")
    for name in ("checkpoint_every", "eval_every", "warmup_steps", "workers"):
        if getattr(args, name) < 0:
            raise ValueError(f"`--{name.replace('_', '-')}` must be >= 0, received "
                             f"{getattr(args, name)}")
    # (name, smallest value, whether it is allowed): NaN fails every comparison.
    for name, low, low_ok in (("lr", 0.0, False), ("momentum", 0.0, True),
                              ("weight_decay", 0.0, True), ("gamma", 0.0, False),
                              ("warmup_factor", 0.0, False), ("hflip_prob", 0.0, True),
                              ("clip_grad_norm", 0.0, False)):
        value = getattr(args, name)
        if value is None:
            continue
        if not (value >= low if low_ok else value > low) or not math.isfinite(value):
            raise ValueError(f"`--{name.replace('_', '-')}` must be a finite number "
                             f"{'>=' if low_ok else '>'} {low}, received {value}")
    if args.hflip_prob > 1.0:
        raise ValueError(f"`--hflip-prob` must be in [0, 1], received {args.hflip_prob}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"`--threads` must be >= 1, received {args.threads}")
    if args.eval_only and args.resume is None and args.weights is None:
        raise ValueError("`--eval-only` needs `--weights` (or `--resume`)")


def _sizes(values: list[float] | None) -> tuple[float | int, ...] | None:
    # Whole pixel sizes stay ints, as torchvision writes its anchors.
    if values is None:
        return None
    return tuple(int(v) if float(v).is_integer() else v for v in values)


def build_model(args: argparse.Namespace, num_classes: int) -> nn.Module:
    """The detector the arguments describe (random init from ``--seed``)."""
    torch.manual_seed(args.seed)  # every rank builds the same initial weights
    builder = MODEL_BUILDERS[args.model]
    sized = {"anchor_sizes": _sizes(args.anchor_sizes),
             "aspect_ratios": None if args.aspect_ratios is None else tuple(args.aspect_ratios),
             "box_head_fc_dims": None if args.box_head_fc_dims is None else tuple(
                 args.box_head_fc_dims)}
    if args.mask_head_channels is not None:
        if not args.model.startswith("maskrcnn"):
            raise ValueError(f"`--mask-head-channels` needs a Mask R-CNN `--model`, received "
                             f"{args.model!r}")
        sized["mask_head_channels"] = tuple(args.mask_head_channels)
    explicit = dict(backbone_name=args.backbone, variant=args.variant, num_classes=num_classes,
                    weights=args.weights, weights_backbone=args.weights_backbone,
                    trainable_backbone_layers=args.trainable_backbone_layers,
                    block_levels=tuple(args.block_levels),
                    block_input_norm=args.block_input_norm, block_norm=args.block_norm,
                    fpn_channels=args.fpn_channels, norm_layer=NORM_LAYERS[args.norm],
                    min_size=args.min_size, max_size=args.max_size, **sized)
    extra = dict(args.model_kwarg)
    valid = builder_kwarg_names(args.model) - set(explicit)
    unknown = sorted(set(extra) - valid)
    if unknown:
        raise ValueError(f"`--model-kwarg` {unknown} (received "
                         f"{({k: extra[k] for k in unknown})!r}) is not an argument of "
                         f"{args.model} left to --model-kwarg (those with their own flag are "
                         f"set there); the valid keys are {sorted(valid)}")
    return builder(**explicit, **extra)


def _config(args: argparse.Namespace) -> dict[str, Any]:
    config = dict(vars(args))
    config["model_kwarg"] = [list(item) for item in args.model_kwarg]
    return config


def _resume(args: argparse.Namespace) -> dict[str, Any] | None:
    """The checkpoint ``--resume`` names; ``latest``: the newest readable one in
    ``--output-dir`` (each unreadable newer one skipped with a warning), or None
    (nothing to resume: start fresh)."""
    if args.resume is None:
        return None
    if args.resume == "latest":
        found = ckpt.load_latest_checkpoint(os.path.join(args.output_dir, "checkpoints"))
        if found is None:
            return None
        return found[1]
    return ckpt.load_checkpoint(args.resume)


def _check_resumable(saved: dict[str, Any], args: argparse.Namespace, world_size: int) -> None:
    config = _config(args)
    changed = [k for k in RESUME_INVARIANTS
               if saved.get(k, INVARIANT_DEFAULTS.get(k)) != config.get(k)]
    saved_batch = saved["batch_size"] * saved["grad_accumulation"] * saved["world_size"]
    batch = args.batch_size * args.grad_accumulation * world_size
    if saved_batch != batch:
        changed.append(f"global batch {saved_batch} -> {batch}")
    if changed:
        raise ValueError(f"`--resume` checkpoint was trained with other settings: {changed}")


class _Writer:
    """JSON lines and files, written by rank 0 only."""

    def __init__(self, directory: str, context: DistributedContext) -> None:
        self.directory = directory
        self.context = context
        if context.is_main:
            os.makedirs(directory, exist_ok=True)

    def line(self, name: str, record: dict[str, Any]) -> None:
        if self.context.is_main:
            with open(os.path.join(self.directory, name), "a") as stream:
                stream.write(json.dumps(record) + "\n")

    def file(self, name: str, record: dict[str, Any]) -> None:
        if self.context.is_main:
            path = os.path.join(self.directory, name)
            with open(f"{path}.tmp", "w") as stream:
                json.dump(record, stream, indent=2)
            os.replace(f"{path}.tmp", path)


def _evaluate(model, dataset, context, args, writer, step) -> dict[str, Any] | None:
    started = time.time()
    metrics, summary = evaluate(model, dataset, context, args.eval_batch_size)
    if not context.is_main:
        return None
    metrics = {"step": step, **metrics, "seconds": round(time.time() - started, 3)}
    print(summary, flush=True)
    writer.line("metrics.jsonl", metrics)
    writer.file("metrics.json", metrics)
    return metrics


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Trains (and/or evaluates) as ``args`` say; returns a summary on rank 0."""
    _check_args(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    context = init_distributed(args.device)
    try:
        return _run(args, context)
    finally:
        shutdown(context)


def _run(args: argparse.Namespace, context: DistributedContext) -> dict[str, Any]:
    writer = _Writer(args.output_dir, context)
    masks = args.model.startswith("maskrcnn")
    val_set = None
    if not args.no_eval:
        val_set = CocoDetection(*find_split(args.data_dir, args.val_split), train=False,
                                masks=masks)
    train_set = None
    if not args.eval_only:
        train_set = CocoDetection(*find_split(args.data_dir, args.train_split), train=True,
                                  hflip_prob=args.hflip_prob, seed=args.seed, masks=masks)
    if args.eval_only and val_set is None:
        raise ValueError("`--eval-only` and `--no-eval` exclude each other")
    # Contiguous labels 1..K of the annotations' categories, plus background.
    num_classes = (train_set if train_set is not None else val_set).num_classes
    model = build_model(args, num_classes).to(context.device)
    saved = _resume(args)
    if saved is not None:
        _check_resumable(saved["config"], args, context.world_size)
        model.load_state_dict(saved["model"])
    if args.eval_only:
        metrics = _evaluate(model, val_set, context, args, writer, saved["step"] if saved else 0)
        return {"metrics": metrics}

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scheduler = warmup_multistep_scheduler(
        optimizer, warmup_steps=args.warmup_steps, warmup_factor=args.warmup_factor,
        milestones=args.lr_milestones, gamma=args.gamma)
    step = 0
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["lr_scheduler"])
        step = int(saved["step"])
        if len(saved["rng"]) == context.world_size:
            ckpt.set_rng_state(saved["rng"][context.rank])
    plan = BatchPlan(len(train_set), args.batch_size, args.grad_accumulation,
                     context.world_size, args.seed)
    network = model
    if context.is_distributed:
        network = nn.parallel.DistributedDataParallel(
            model, device_ids=[context.device.index] if context.device.type == "cuda" else None,
            find_unused_parameters=args.find_unused_parameters)
    if context.is_main:
        print(f"training {args.model} {args.backbone} {args.variant} from step {step} to "
              f"{args.steps}: {len(train_set)} images, global batch {plan.global_batch}, "
              f"{context.world_size} process(es) on {context.device}", flush=True)
    network.train()
    metrics = None
    batches = rank_micro_batches(train_set, plan, context.rank, step, args.workers)
    while step < args.steps:
        started = time.time()
        lr = optimizer.param_groups[0]["lr"]  # the rate this step uses
        losses = train_step(network, optimizer, scheduler, next(batches), args.seed, step,
                            context.device, args.clip_grad_norm)
        step += 1
        losses = all_reduce_mean(losses, context)
        if step % args.log_every == 0 or step == args.steps:
            record = {"step": step, "epoch": plan.epoch_of(step - 1),
                      "lr": lr, **losses,
                      "seconds": round(time.time() - started, 3)}
            writer.line("log.jsonl", record)
            if context.is_main:
                print(json.dumps(record), flush=True)
        if (args.checkpoint_every and step % args.checkpoint_every == 0) or step == args.steps:
            rng = all_gather_objects(ckpt.rng_state(), context)
            if context.is_main:
                ckpt.save_checkpoint(
                    ckpt.checkpoint_path(os.path.join(args.output_dir, "checkpoints"), step),
                    model=model, optimizer=optimizer, scheduler=scheduler, step=step, rng=rng,
                    config={**_config(args), "world_size": context.world_size})
            barrier(context)
        if val_set is not None and (
                (args.eval_every and step % args.eval_every == 0) or step == args.steps):
            metrics = _evaluate(model, val_set, context, args, writer, step)
    return {"step": step, "metrics": metrics}


def main(argv: list[str] | None = None) -> int:
    """The command line: 0 on success, 2 (with the message on stderr) on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
