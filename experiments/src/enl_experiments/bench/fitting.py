"""Log-log slopes: how a time grows with N."""

from __future__ import annotations

import math

import numpy as np


def loglog_slope(sizes, times) -> float:
    """Least-squares slope of ``log(time)`` against ``log(size)``.

    A slope of 1 is linear growth, 2 quadratic (the N x N affinity).

    Args:
        sizes: positive sizes (N), at least two distinct.
        times: positive times, one per size.

    Raises:
        ValueError: fewer than two distinct sizes, mismatched lengths, or a
            non-positive / non-finite value.

    Example:
        >>> round(loglog_slope([1, 2, 4], [3.0, 6.0, 12.0]), 6)
        1.0
    """
    sizes, times = list(sizes), list(times)
    if len(sizes) != len(times):
        raise ValueError(f"`sizes` and `times` must have the same length, received "
                         f"{len(sizes)} and {len(times)}")
    for name, values in (("sizes", sizes), ("times", times)):
        if any(not math.isfinite(v) or v <= 0 for v in values):
            raise ValueError(f"`{name}` must be positive and finite, received {values}")
    if len(set(sizes)) < 2:
        raise ValueError(f"`sizes` needs at least two distinct values, received {sizes}")
    slope, _ = np.polyfit(np.log(sizes), np.log(times), 1)
    return float(slope)
