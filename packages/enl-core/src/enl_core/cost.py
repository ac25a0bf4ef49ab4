"""Cost model of NL and ENL blocks (paper Sec. 4.3, Table 3).

Counts are multiply-adds (MACs) per image, exactly those the reference in
:mod:`enl_core.blocks` performs; bias additions, the softmax and the residual
sum are not counted, and L is a constant of the grid (built once, not counted).
Per position this is the spec's table: ``4 C C'`` for the projections,
``2 C'^2`` for ``phi g`` and ``theta^T [phi g]``, the position term, and for
NL ``2 N' C'`` instead of ``2 C'^2``.

Memory is a model too: ``affinity_floats`` is the pairwise intermediate
(``N N'`` for NL, ``C'^2`` for ENL), ``peak_floats`` adds the live
theta, phi, g and y (``4 N C'``) and the position term's coefficients.
"""

from __future__ import annotations

import dataclasses
import math

from enl_core.blocks import NL_MODES
from enl_core.fpn import DEFAULT_BLOCK_LEVELS, check_block_levels
from enl_core.params import default_inter_channels
from enl_core.validation import (
    DEFAULT_DCT_SIZE,
    clamp_dct_size,
    normalize_dct_size,
    positive_int,
)

NL_KIND_MODES = {f"nl_{mode}": mode for mode in NL_MODES}
"""Each NL ``kind`` of :func:`block_cost` and the ``mode`` of its NL block."""
BLOCK_KINDS = ("enl", *NL_KIND_MODES)


@dataclasses.dataclass(frozen=True)
class BlockCost:
    """Cost of one block (or a sum of blocks) on one image."""

    macs: int
    params: int
    affinity_floats: int
    peak_floats: int

    def __add__(self, other: BlockCost) -> BlockCost:
        # Blocks run one after another: memory peaks do not add up.
        return BlockCost(self.macs + other.macs, self.params + other.params,
                         max(self.affinity_floats, other.affinity_floats),
                         max(self.peak_floats, other.peak_floats))

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9


ZERO = BlockCost(0, 0, 0, 0)


def block_params(channels: int, inter_channels: int | None = None, use_bias: bool = True,
                 dct_size=None, learnable_dct_weights: bool = False) -> int:
    """``4 C C' + 3 C' + C`` (with bias), plus ``kH kW`` for a learnable d."""
    channels = positive_int("channels", channels)
    inter = default_inter_channels(channels) if inter_channels is None else positive_int(
        "inter_channels", inter_channels)
    count = 4 * channels * inter + (3 * inter + channels if use_bias else 0)
    if learnable_dct_weights:
        k_h, k_w = normalize_dct_size(DEFAULT_DCT_SIZE if dct_size is None else dct_size)
        count += k_h * k_w
    return count


def position_macs(height: int, width: int, inter_channels: int, dct_size=DEFAULT_DCT_SIZE,
                  separable: bool = True) -> int:
    """MACs of ``E-hat (E-hat^T g)`` for one image (eq. 9)."""
    k_h, k_w = clamp_dct_size(dct_size, height, width)
    n = height * width
    if separable:
        # W contracted first: 2 N kW C' on the width axis, 2 H kH kW C' on the height axis.
        return 2 * n * k_w * inter_channels + 2 * height * k_h * k_w * inter_channels
    return 2 * n * k_h * k_w * inter_channels


def block_cost(height: int, width: int, channels: int, inter_channels: int | None = None,
               kind: str = "enl", position_encoding: bool = True, dct_size=DEFAULT_DCT_SIZE,
               separable: bool = True, sub_sample: bool = False,
               learnable_dct_weights: bool = False) -> BlockCost:
    """Cost of one block on an H x W x C feature map.

    Args:
        kind: "enl", "nl_dot_product" or "nl_embedded_gaussian".
        position_encoding: ENL's DCT term; for NL the explicit L added to F
            (dot product only), which adds no MACs to ``(F + L) g``.
        sub_sample: NL's 2x2 max pooling of phi and g (N' = N / 4).
    """
    if kind not in BLOCK_KINDS:
        raise ValueError(f"`kind` must be one of {BLOCK_KINDS}, received {kind!r}")
    height = positive_int("height", height)
    width = positive_int("width", width)
    channels = positive_int("channels", channels)
    inter = default_inter_channels(channels) if inter_channels is None else positive_int(
        "inter_channels", inter_channels)
    n = height * width
    projections = 4 * n * channels * inter
    live = 4 * n * inter  # theta, phi, g, y
    if kind == "enl":
        macs = projections + 2 * n * inter * inter
        affinity = inter * inter
        extra = 0
        if position_encoding:
            macs += position_macs(height, width, inter, dct_size, separable)
            k_h, k_w = clamp_dct_size(dct_size, height, width)
            extra = k_h * k_w * inter
        params = block_params(channels, inter, dct_size=dct_size,
                              learnable_dct_weights=learnable_dct_weights and position_encoding)
        return BlockCost(macs, params, affinity, live + affinity + extra)
    n_keys = (height // 2) * (width // 2) if sub_sample else n
    macs = projections + 2 * n * n_keys * inter
    params = block_params(channels, inter)
    return BlockCost(macs, params, n * n_keys, live + n * n_keys)


def level_shape(image_height: int, image_width: int, level: int) -> tuple[int, int]:
    """Feature size at FPN level ``level`` (stride 2^level), rounding up."""
    stride = 2 ** level
    return math.ceil(image_height / stride), math.ceil(image_width / stride)


def fpn_blocks_cost(image_height: int, image_width: int, block_levels=DEFAULT_BLOCK_LEVELS,
                    channels: int = 256,
                    inter_channels: int | None = None, kind: str = "enl",
                    position_encoding: bool = True, dct_size=DEFAULT_DCT_SIZE,
                    separable: bool = True) -> dict[int, BlockCost]:
    """Cost of the top-down blocks of an ENL-FPN, one entry per block level
    (checked by :func:`enl_core.fpn.check_block_levels`), coarse to fine.

    ``sum(result.values(), enl_core.cost.ZERO)`` is the total the blocks add to
    the baseline detector.
    """
    costs = {}
    for level in check_block_levels(block_levels):
        height, width = level_shape(image_height, image_width, level)
        costs[level] = block_cost(height, width, channels, inter_channels, kind,
                                  position_encoding, dct_size, separable)
    return costs
