"""The effective reach of a detector's features, from input gradients (framework-neutral part).

The gradient of one feature at the centre of a level with respect to the
input pixels says which pixels it actually depends on (the effective
receptive field, Luo et al., NeurIPS 2016). Its mass by horizontal distance
from the feature's centre gives the distance within which 50%, 90% and 99%
of it lie, and the farthest pixel with any gradient (which, for a
convolutional detector, stays within the theoretical reach of
:mod:`enl_experiments.main.reach`). The framework children compute the
gradients: :mod:`enl_experiments.main.erf_torch` (the torch mirror) and
:mod:`enl_experiments.main.erf_garden` (Model Garden checkpoints).
"""

from __future__ import annotations

import numpy as np

FRACTIONS = (0.5, 0.9, 0.99)


def horizontal_reach(gradient: np.ndarray, centre_x: int, fractions=FRACTIONS) -> dict:
    """Distances (px) from ``centre_x`` holding each fraction of the gradient's mass.

    Args:
        gradient: (H, W) absolute input gradient.
        centre_x: the feature's centre column.
        fractions: cumulative fractions to report.

    Returns:
        ``{"fraction_<f>": distance, "farthest": distance}``.

    Raises:
        ValueError: a gradient that is not 2-D or has no mass.
    """
    gradient = np.asarray(gradient, np.float64)
    if gradient.ndim != 2 or not np.any(gradient > 0):
        raise ValueError(f"`gradient` must be a 2-D array with some mass, received shape "
                         f"{gradient.shape}")
    columns = gradient.sum(axis=0)
    distance = np.abs(np.arange(columns.size) - centre_x)
    mass = np.bincount(distance, weights=columns)
    cumulative = np.cumsum(mass) / mass.sum()
    result = {f"fraction_{f}": int(np.searchsorted(cumulative, f)) for f in fractions}
    result["farthest"] = int(distance[columns > 0].max())
    return result


def feature_column(feature_width: int, position: float = 0.5) -> int:
    """The feature column at ``position`` (0 left edge .. 1 right edge) of a level's width."""
    if not 0.0 <= position <= 1.0:
        raise ValueError(f"`position` must be in [0, 1], received {position!r}")
    return min(int(feature_width * position), feature_width - 1)


def feature_centre_x(feature_width: int, image_width: int, position: float = 0.5) -> int:
    """The input column at the centre of the feature column at ``position``."""
    stride = image_width // feature_width
    return feature_column(feature_width, position) * stride + stride // 2


def level_reach(totals: dict, feature_widths: dict, image_width: int, position: float = 0.5,
                fractions=FRACTIONS, beyond: float | None = None) -> dict:
    """:func:`horizontal_reach` of each level's summed gradient map.

    Args:
        totals: ``{"P<l>": (H, W) absolute input gradient summed over images}``.
        feature_widths: ``{"P<l>": the level's feature width}``.
        image_width: the input's width in pixels.
        position: where along the width the feature sat (:func:`feature_column`).
        beyond: also report ``"mass_beyond"``, the share of the gradient's mass
            farther than this many pixels (e.g. the baseline's theoretical reach).
    """
    result = {}
    for level, total in sorted(totals.items()):
        centre_x = feature_centre_x(feature_widths[level], image_width, position)
        result[level] = horizontal_reach(total, centre_x, fractions)
        result[level]["centre_x"] = centre_x
        if beyond is not None:
            columns = np.asarray(total, np.float64).sum(axis=0)
            far = np.abs(np.arange(columns.size) - centre_x) > beyond
            result[level]["mass_beyond"] = float(columns[far].sum() / columns.sum())
    return result
