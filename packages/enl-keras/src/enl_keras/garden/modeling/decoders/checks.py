"""Argument checks of the ENL-FPN decoder, shared by its config and its model.

Each raises ``ValueError`` / ``TypeError`` naming the field and the value
received, so a bad YAML value fails with a message that says what to fix.
"""

from __future__ import annotations

import numbers

from enl_core.validation import normalize_dct_size, positive_int

BLOCKS = ("enl", "nl")
BLOCK_NORMS = ("batch", "layer")


def check_block(block) -> str:
    """Returns ``block`` if it is "enl" or "nl"."""
    if block not in BLOCKS:
        raise ValueError(f"`block` must be one of {BLOCKS}, received {block!r}")
    return block


def check_block_norm(block_norm) -> str:
    """Returns ``block_norm`` if it is "batch" or "layer"."""
    if block_norm not in BLOCK_NORMS:
        raise ValueError(f"`block_norm` must be one of {BLOCK_NORMS}, received {block_norm!r}")
    return block_norm


def check_bool(name: str, value) -> bool:
    """Returns ``value`` if it is a bool; the one parser of the boolean fields.

    YAML ``'false'`` (quoted) or ``--params_override field='false'`` is a
    string, and ``bool('false')`` is True: a string is rejected, naming the
    field and the value, never coerced (``false`` unquoted is a bool).
    """
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool (true/false, unquoted in YAML), received "
                        f"{value!r} of type {type(value).__name__}")
    return value


def check_enl_only(block: str, position_encoding, dct_size) -> None:
    """NL blocks have no position term: ``position_encoding`` / ``dct_size``
    must stay unset (None) for ``block="nl"``, rather than be ignored."""
    if block != "nl":
        return
    given = {name: value for name, value in (("position_encoding", position_encoding),
                                              ("dct_size", dct_size)) if value is not None}
    if given:
        raise ValueError(f"`block` 'nl' has no position term: leave "
                         f"{' and '.join(f'`{name}`' for name in given)} unset (None), "
                         f"received {', '.join(f'{k}={v!r}' for k, v in given.items())}")


def check_dct_size(dct_size) -> tuple[int, int]:
    """Returns ``(kH, kW)``; raises naming `dct_size` when a size is < 1."""
    return normalize_dct_size(tuple(dct_size) if isinstance(dct_size, list) else dct_size)


def check_inter_channels(inter_channels) -> int | None:
    """Returns None or a positive int."""
    return None if inter_channels is None else positive_int("inter_channels", inter_channels)


def check_levels(levels, min_level: int | None = None, max_level: int | None = None
                 ) -> tuple[int, ...]:
    """Returns ``levels`` sorted coarse to fine (descending).

    Args:
        levels: FPN levels that get a block.
        min_level, max_level: the top-down stream's range; each level must lie
            in it (checked when given).

    Raises:
        ValueError: naming `levels`, for an empty list, a non-integer, a
            repeated level or a level outside [min_level, max_level].
    """
    try:
        levels = list(levels)
    except TypeError:
        raise ValueError(f"`levels` must be a list of FPN levels, received {levels!r}") from None
    if not levels:
        raise ValueError(f"`levels` must name at least one FPN level, received {levels!r}")
    for level in levels:
        if isinstance(level, bool) or not isinstance(level, numbers.Integral):
            raise ValueError(f"`levels` must be integers, received {levels!r}")
    if len(set(levels)) != len(levels):
        raise ValueError(f"`levels` must not repeat a level, received {levels!r}")
    if min_level is not None and max_level is not None:
        outside = [level for level in levels if not min_level <= level <= max_level]
        if outside:
            raise ValueError(
                f"`levels` must lie in [min_level, max_level] = [{min_level}, {max_level}] "
                f"(the top-down stream, where blocks are applied), received {levels!r}")
    # Coarse to fine: each block sees what the coarser blocks passed down.
    return tuple(sorted((int(level) for level in levels), reverse=True))
