"""Learning-rate schedule of the detection recipes: linear warm-up, then steps.

Used through ``torch.optim.lr_scheduler.LambdaLR``; the factor is a small
callable object (not a closure) so that the scheduler's ``state_dict`` holds
it and a checkpoint restores the schedule exactly.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch


class WarmupMultiStep:
    """LR factor at optimizer step ``step``: warm-up from ``warmup_factor`` to 1
    over ``warmup_steps``, times ``gamma`` at each of ``milestones``.

    Raises:
        ValueError: negative steps, unsorted milestones, or factors out of range.
    """

    def __init__(self, warmup_steps: int = 0, warmup_factor: float = 0.001,
                 milestones: Sequence[int] = (), gamma: float = 0.1) -> None:
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"`warmup_steps` must be a non-negative int, received "
                             f"{warmup_steps!r}")
        if not 0.0 < float(warmup_factor) <= 1.0:
            raise ValueError(f"`warmup_factor` must be in (0, 1], received {warmup_factor!r}")
        milestones = list(milestones)
        if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in milestones) or (
                milestones != sorted(milestones)):
            raise ValueError(f"`milestones` must be increasing positive ints, received "
                             f"{milestones!r}")
        if not 0.0 < float(gamma) <= 1.0:
            raise ValueError(f"`gamma` must be in (0, 1], received {gamma!r}")
        self.warmup_steps = warmup_steps
        self.warmup_factor = float(warmup_factor)
        self.milestones = milestones
        self.gamma = float(gamma)

    def __call__(self, step: int) -> float:
        factor = self.gamma ** bisect.bisect_right(self.milestones, step)
        if step < self.warmup_steps:
            alpha = step / self.warmup_steps
            factor *= self.warmup_factor * (1.0 - alpha) + alpha
        return factor


def warmup_multistep_scheduler(optimizer: torch.optim.Optimizer, **kwargs
                               ) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR(optimizer, WarmupMultiStep(**kwargs))``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupMultiStep(**kwargs))
