"""The ENL-FPN's shared names, checks and top-down reference (paper Sec. 3.3, 4.1).

Both frameworks' decoders (``enl_keras.garden``'s ``ENLFPN`` and
``enl_torch.detection``'s ``ENLFeaturePyramidNetwork``) and the cost model
take their block names, norms, default levels and level checks from here, so
a level one of them accepts the other accepts too.

Vocabulary, the same in every package: ``block_levels`` are the pyramid
levels that get a block (the paper's P5, P4, P3 are levels 5, 4, 3, stride
``2**level``); the levels of the top-down stream itself are the *stream
levels* (Model Garden's ``[min_level, backbone max level]``, torchvision's
one level per input map).

The top-down stream (docs/ENL-SPEC.md, "Coarse-to-fine placement")::

    P_max = block_max(lat_max)
    P_l   = block_l(lat_l + up(P_{l+1}))      for l = max - 1, ..., min

A block is applied to the merged feature of its level *before* that feature
is upsampled into the next finer level, so each block sees what the coarser
blocks passed down. :func:`top_down` writes this recursion once; the tests of
every framework call it with their own blocks and upsampling.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

import numpy as np

BLOCK_TYPES = ("enl", "nl")
"""Blocks an FPN level can get: ENL, or the embedded-Gaussian NL of Wang et al."""
BLOCK_NORMS = ("batch", "layer")
"""Norms of ``block_input_norm``: batch norm, or a layer norm over channels."""
DEFAULT_BLOCK_LEVELS = (5, 4, 3)
"""The paper's "+3ENL, TD": blocks at P5, P4, P3."""

Feature = TypeVar("Feature")


def _check_choice(name: str, value, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, received {value!r}")
    return value


def check_block(block) -> str:
    """Returns ``block`` if it is one of :data:`BLOCK_TYPES`.

    Raises:
        ValueError: naming `block` and the value received.
    """
    return _check_choice("block", block, BLOCK_TYPES)


def check_block_norm(block_norm) -> str:
    """Returns ``block_norm`` if it is one of :data:`BLOCK_NORMS`.

    Raises:
        ValueError: naming `block_norm` and the value received.
    """
    return _check_choice("block_norm", block_norm, BLOCK_NORMS)


def check_levels(name: str, levels) -> tuple[int, ...]:
    """``levels`` as a tuple of ints, in the order given.

    The one rule for any list of pyramid levels: a non-empty sequence (a string
    is not one) of non-negative integers (``bool`` is not one), none repeated.

    Raises:
        TypeError: naming ``name``, for a value that is not a sequence.
        ValueError: naming ``name``, for an empty sequence, a non-integer, a
            negative or a repeated level.
    """
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Iterable):
        raise TypeError(f"`{name}` must be a sequence of FPN levels (ints), received {levels!r}")
    values = tuple(levels)
    if not values:
        raise ValueError(f"`{name}` must name at least one FPN level, received {levels!r}")
    for level in values:
        if isinstance(level, bool) or not isinstance(level, numbers.Integral) or level < 0:
            raise ValueError(f"`{name}` must be non-negative integers, received {levels!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"`{name}` must not repeat a level, received {levels!r}")
    return tuple(int(level) for level in values)


def check_block_levels(block_levels, stream_levels: Iterable[int] | None = None,
                       name: str = "block_levels") -> tuple[int, ...]:
    """Returns ``block_levels`` sorted coarse to fine (descending).

    The rule both decoders apply (the stricter of the ones they had): the
    :func:`check_levels` rule (so at least one level: an FPN without blocks is
    the plain FPN, build that instead) and, when ``stream_levels`` is given,
    every level on the top-down stream.

    Args:
        block_levels: the levels that get a block, in any order.
        stream_levels: the levels of the top-down stream, or None to skip
            that check (a config checked before the model knows its levels).
        name: the argument the errors name (a deprecated alias names itself).

    Returns:
        tuple of ints, coarse to fine: the order the blocks run in.

    Raises:
        TypeError / ValueError: naming `name` and the value received.

    Example::

        check_block_levels([3, 5, 4], stream_levels=range(2, 6))  # (5, 4, 3)
    """
    levels = check_levels(name, block_levels)
    if stream_levels is not None:
        stream = tuple(stream_levels)
        outside = [level for level in levels if level not in stream]
        if outside:
            raise ValueError(f"`{name}` must lie on the top-down stream, levels "
                             f"{stream} (blocks are applied there), received "
                             f"{block_levels!r}")
    # Coarse to fine: each block sees what the coarser blocks passed down.
    return tuple(sorted(levels, reverse=True))


def upsample_nearest(feature: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Nearest-neighbour 2x upsampling of a channels-last (B, H, W, C) array,
    cropped to the grid of ``like`` (the finer level's lateral feature)."""
    up = np.asarray(feature).repeat(2, axis=1).repeat(2, axis=2)
    return up[:, : like.shape[1], : like.shape[2]]


def top_down(laterals: Mapping[int, Feature],
             blocks: Mapping[int, Callable[[Feature], Feature]],
             upsample: Callable[[Feature, Feature], Feature] = upsample_nearest,
             ) -> dict[int, Feature]:
    """The ENL-FPN top-down stream, written plainly: the ``expected_fn`` of
    every framework's decoder.

    ``P_max = block_max(lat_max)``, ``P_l = block_l(lat_l + up(P_{l+1}))``
    from the coarsest level down; a level without a block passes its merged
    feature on unchanged.

    Args:
        laterals: ``{level: lateral feature}`` for every level of the stream
            (any array type with ``+``: NumPy, torch, TensorFlow).
        blocks: ``{level: block}`` for the levels that get one; each maps a
            feature to one of the same shape (its residual included).
        upsample: ``upsample(coarser, lateral)`` brings ``P_{l+1}`` to the grid
            of ``lat_l``; default :func:`upsample_nearest` (channels-last NumPy).

    Returns:
        ``{level: P_level}`` (the top-down features, before any output
        convolution).

    Raises:
        ValueError: naming `blocks`, for a block at a level that is not in
            ``laterals``.

    Example::

        stream = top_down({5: c5, 4: c4}, {5: block5})   # P5 = block5(c5), P4 = c4 + up(P5)
    """
    unknown = sorted(set(blocks) - set(laterals))
    if unknown:
        raise ValueError(f"`blocks` has levels {unknown} that are not in `laterals` "
                         f"(levels {sorted(laterals)})")
    outputs, coarser = {}, None
    for level in sorted(laterals, reverse=True):
        merged = laterals[level] if coarser is None else (
            laterals[level] + upsample(coarser, laterals[level]))
        if level in blocks:
            merged = blocks[level](merged)
        outputs[level] = coarser = merged
    return outputs


__all__ = [
    "BLOCK_NORMS",
    "BLOCK_TYPES",
    "DEFAULT_BLOCK_LEVELS",
    "check_block",
    "check_block_levels",
    "check_block_norm",
    "check_levels",
    "top_down",
    "upsample_nearest",
]
