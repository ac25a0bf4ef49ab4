"""``torch.distributed`` set-up for ``torchrun`` (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Any

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class DistributedContext:
    """Where this process sits: ``rank`` of ``world_size``, on ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` -> this rank's GPU."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"`device` must be 'auto', 'cpu' or 'cuda', received {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("`device` 'cuda' was requested but CUDA is not available")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device: str = "auto", backend: str | None = None) -> DistributedContext:
    """Joins the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ...).

    A single process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) needs no group.
    The backend defaults to nccl for CUDA and gloo for CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if resolved.type == "cuda" else "gloo")
        dist.init_process_group(backend=backend, init_method="env://", rank=rank,
                                world_size=world_size, timeout=datetime.timedelta(minutes=30))
    return DistributedContext(rank, world_size, local_rank, resolved)


def all_gather_objects(value: Any, context: DistributedContext) -> list[Any]:
    """Every rank's ``value``, in rank order (a one-element list without a group)."""
    if not context.is_distributed:
        return [value]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def all_reduce_mean(values: dict[str, float], context: DistributedContext) -> dict[str, float]:
    """Averages a dict of floats over the ranks (for logging)."""
    if not context.is_distributed or not values:
        return dict(values)
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64,
                          device=context.device if context.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor)
    tensor /= context.world_size
    return dict(zip(keys, tensor.tolist(), strict=True))


def barrier(context: DistributedContext) -> None:
    """Waits for every rank (no-op in one process)."""
    if context.is_distributed:
        dist.barrier()


def shutdown(context: DistributedContext) -> None:
    """Leaves the process group, if this process joined one."""
    if context.is_distributed and dist.is_initialized():
        dist.destroy_process_group()
