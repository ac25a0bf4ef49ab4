"""Argument checks of the ENL-FPN decoder, shared by its config and its model
(and by the NL backbone, with the ``norm_activation`` arguments both builders take).

Each raises ``ValueError`` / ``TypeError`` naming the field and the value
received, so a bad YAML value fails with a message that says what to fix.
The block names, norms and the level rule are not here: they are the
framework-neutral ones of :mod:`enl_core.fpn`, which ``enl_torch.detection``
applies too; these are the checks only this decoder needs.
"""

from __future__ import annotations

import warnings

from enl_core.fpn import DEFAULT_BLOCK_LEVELS
from enl_core.validation import normalize_dct_size, positive_int


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


def resolve_block_levels(block_levels, levels):
    """``block_levels``, or the deprecated ``levels`` it replaces.

    ``levels`` was this decoder's name for the levels that get a block; it is
    ``block_levels`` now, as in ``enl_torch.detection`` (where ``levels`` is
    the level of each input map). Given alone, ``levels`` still works, with a
    ``DeprecationWarning``; ``block_levels=None`` means the default (5, 4, 3).

    Raises:
        ValueError: both are given and differ.
    """
    if levels is None:
        return DEFAULT_BLOCK_LEVELS if block_levels is None else block_levels
    if block_levels is not None and list(block_levels) != list(levels):
        raise ValueError(f"`levels` is the deprecated name of `block_levels`: give only "
                         f"`block_levels`, received levels={levels!r} and "
                         f"block_levels={block_levels!r}")
    warnings.warn("`levels` of the ENL-FPN decoder is deprecated; it is now `block_levels` "
                  "(the levels that get a block), as in enl_torch.detection",
                  DeprecationWarning, stacklevel=3)
    return levels


def norm_activation_kwargs(norm_activation_config, l2_regularizer=None) -> dict:
    """The keyword arguments Model Garden's builders take from ``norm_activation``.

    ``official.vision`` passes ``activation``, ``use_sync_bn``,
    ``norm_momentum``, ``norm_epsilon`` and the L2 ``kernel_regularizer`` to
    every backbone and decoder it builds; the NL backbone and the ENL-FPN
    decoder take them the same way, from here.
    """
    return {"activation": norm_activation_config.activation,
            "use_sync_bn": norm_activation_config.use_sync_bn,
            "norm_momentum": norm_activation_config.norm_momentum,
            "norm_epsilon": norm_activation_config.norm_epsilon,
            "kernel_regularizer": l2_regularizer}
