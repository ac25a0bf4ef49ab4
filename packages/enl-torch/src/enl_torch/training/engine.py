"""One optimizer step of a torchvision detector, the same on any number of processes.

A step consumes one *global batch* of ``batch_size * grad_accumulation *
world_size`` images, split into micro-batches of ``batch_size`` numbered
``0 .. grad_accumulation * world_size - 1``; rank ``r`` runs micro-batches
``r * grad_accumulation ...``. The images of a global batch come from a
permutation drawn from ``(seed, epoch)`` alone, and before each micro-batch
the torch generator is seeded from ``(seed, step, micro-batch)``: the RPN and
RoI samplers (``torch.randperm``) then draw the same numbers whichever process
runs the micro-batch. Hence two processes with one micro-batch each compute
the same gradients as one process accumulating both micro-batches (DDP
averages over ranks, accumulation over micro-batches: both are the mean over
micro-batches), and a resumed run repeats exactly the steps it skipped.

Note that torchvision's detection losses are normalised per micro-batch
(sampled anchors, RoIs, mask pixels), so a step on one micro-batch of four
images is not the same function as the mean of four one-image micro-batches.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.data import DataLoader

from enl_torch.data.coco import CocoDetection, collate
from enl_torch.data.seeding import derived_seed


class BatchPlan:
    """Which images each micro-batch of each step reads.

    Args:
        num_images: images in the training set.
        batch_size: images per micro-batch (per process, per forward).
        grad_accumulation: micro-batches per process per step.
        world_size: processes.
        seed: seed of the epoch permutations.

    Raises:
        ValueError: the dataset has fewer images than one global batch.
    """

    def __init__(self, num_images: int, batch_size: int, grad_accumulation: int,
                 world_size: int, seed: int) -> None:
        for name, value in (("batch_size", batch_size), ("grad_accumulation", grad_accumulation),
                            ("world_size", world_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, received {value!r}")
        self.num_images = num_images
        self.batch_size = batch_size
        self.grad_accumulation = grad_accumulation
        self.world_size = world_size
        self.seed = seed
        self.global_batch = batch_size * grad_accumulation * world_size
        if num_images < self.global_batch:
            raise ValueError(f"the training set has {num_images} images, fewer than one global "
                             f"batch (batch_size {batch_size} x grad_accumulation "
                             f"{grad_accumulation} x world_size {world_size} = "
                             f"{self.global_batch})")
        self.steps_per_epoch = num_images // self.global_batch  # the remainder is dropped

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch))
        return torch.randperm(self.num_images, generator=generator).tolist()

    def micro_batches(self, step: int, rank: int) -> list[tuple[int, list[int]]]:
        """``[(micro-batch number, image indices), ...]`` of ``rank`` at ``step``."""
        epoch, within = divmod(step, self.steps_per_epoch)
        order = self.order(epoch)
        start = within * self.global_batch
        plan = []
        for offset in range(self.grad_accumulation):
            number = rank * self.grad_accumulation + offset
            first = start + number * self.batch_size
            plan.append((number, order[first:first + self.batch_size]))
        return plan


def check_targets(targets: Sequence[dict[str, torch.Tensor]], step: int) -> None:
    """Raises naming the image and the box when a target box has no area.

    torchvision asserts the same deep in the model (``All bounding boxes should
    have positive height and width``) without saying which image; a box that
    lies outside its image becomes such a box when the dataset clamps it.

    Raises:
        ValueError: naming the step, ``image_id``, the box's index and coordinates.
    """
    for target in targets:
        boxes = target["boxes"]
        bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        if bool(bad.any()):
            index = int(bad.nonzero()[0, 0])
            raise ValueError(f"training target of image_id {int(target['image_id'])} at step "
                             f"{step} has {int(bad.sum())} box(es) without positive width and "
                             f"height (x0, y0, x1, y1 after clamping to the image), the first "
                             f"is box {index}: {boxes[index].tolist()}; fix or drop its "
                             f"annotation")


def _to_device(images, targets, device: torch.device):
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
    return images, targets


class MicroBatch(NamedTuple):
    """A loaded micro-batch: its number in the global batch, images, targets."""

    number: int
    images: list[torch.Tensor]
    targets: list[dict[str, torch.Tensor]]


def rank_micro_batches(dataset: CocoDetection, plan: BatchPlan, rank: int, start_step: int,
                       workers: int = 0) -> Iterator[list[MicroBatch]]:
    """Yields this rank's loaded micro-batches for ``start_step``, the next step, ...

    One ``DataLoader`` per epoch (``workers`` processes prefetch ahead); what is
    loaded depends only on the plan and the dataset's seed, never on the workers.
    """
    step = start_step
    while True:
        epoch = plan.epoch_of(step)
        dataset.set_epoch(epoch)  # before the workers copy the dataset
        end = (epoch + 1) * plan.steps_per_epoch
        steps = [plan.micro_batches(s, rank) for s in range(step, end)]
        loader = DataLoader(dataset, batch_sampler=[ix for mbs in steps for _, ix in mbs],
                            collate_fn=collate, num_workers=workers)
        batches = iter(loader)
        for micro_batches in steps:
            yield [MicroBatch(number, *next(batches)) for number, _ in micro_batches]
        step = end


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler,
               micro_batches: Sequence[MicroBatch], seed: int, step: int, device: torch.device,
               clip_grad_norm: float | None = None) -> dict[str, float]:
    """Runs optimizer step ``step`` on this rank's micro-batches.

    ``model`` may be wrapped in ``DistributedDataParallel``: gradients are
    synchronised on the last micro-batch only.

    Returns:
        This rank's losses (mean over its micro-batches) and ``"loss"`` their sum.

    Raises:
        ValueError: a target box without area (:func:`check_targets`).
        FloatingPointError: a loss is not finite (naming the step and the losses).
    """
    optimizer.zero_grad(set_to_none=True)
    totals: dict[str, float] = defaultdict(float)
    for position, (number, images, targets) in enumerate(micro_batches):
        check_targets(targets, step)
        images, targets = _to_device(images, targets, device)
        torch.manual_seed(derived_seed(seed, step, number))
        last = position == len(micro_batches) - 1
        # DDP all-reduces on the last micro-batch only (accumulation in between).
        defer = not last and hasattr(model, "no_sync")
        sync = model.no_sync() if defer else contextlib.nullcontext()
        with sync:
            losses = model(images, targets)
            loss = sum(losses.values())
            if not math.isfinite(float(loss.detach())):
                values = {k: float(v.detach()) for k, v in losses.items()}
                raise FloatingPointError(f"loss is {float(loss.detach())} at step {step} "
                                         f"(micro-batch {number}): {values}")
            (loss / len(micro_batches)).backward()
        for name, value in losses.items():
            totals[name] += float(value.detach()) / len(micro_batches)
        totals["loss"] += float(loss.detach()) / len(micro_batches)
    if clip_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters() if p.grad is not None], clip_grad_norm)
    optimizer.step()
    scheduler.step()
    return dict(totals)
