"""Exact weight transfer between the torch blocks' ``state_dict`` and ``.npz``.

Every framework meets the others through the shared layout of
:mod:`enl_core.params` (kernels ``(in, out)``), so a transfer is a copy and a
transpose: bit-exact in float32. This module reads and writes that layout from
a whole model's ``state_dict`` (e.g. a detector with three ENL blocks), by
prefix: :func:`find_blocks`, :func:`state_dict_to_block_weights`,
:func:`block_weights_to_state_dict`, :func:`state_dict_to_npz`,
:func:`npz_to_state_dict`. A bare block has ``save_npz`` / ``load_npz`` /
``get_block_weights`` / ``set_block_weights`` itself.

Keras files and TensorFlow checkpoints are read and written by
``enl_keras.interchange`` (into / from the same ``.npz``); an in-process copy
between a torch block and a Keras layer is
``module.set_block_weights(layer.get_block_weights())``.

Example:
    >>> import enl_torch
    >>> block = enl_torch.ENL(64)
    >>> state = block.state_dict()
    >>> enl_torch.convert.state_dict_to_npz(state, "enl.npz")
    >>> twin = enl_torch.ENL(64); twin.load_npz("enl.npz")
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch

from enl_core import params as core_params
from enl_torch.base import to_numpy


def find_blocks(state_dict: Mapping) -> list[str]:
    """Prefixes (``"fpn.blocks.0."``, or ``""`` for a bare block) of every
    ENL / NonLocal in a ``state_dict``, found by their four projections."""
    prefixes = []
    for key in state_dict:
        if key.endswith("theta.weight"):
            prefix = key[: -len("theta.weight")]
            if all(f"{prefix}{name}.weight" in state_dict for name in core_params.PROJECTIONS):
                prefixes.append(prefix)
    return prefixes


def state_dict_to_block_weights(state_dict: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    """One block of a ``state_dict`` in the shared layout (float64-safe numpy copies).

    Raises:
        KeyError: a projection weight is missing under ``prefix``.
    """
    weights = {}
    for name in core_params.PROJECTIONS:
        key = f"{prefix}{name}.weight"
        if key not in state_dict:
            raise KeyError(f"`state_dict` has no {key!r}; blocks found: {find_blocks(state_dict)}")
        kernel = _numpy(state_dict[key])[:, :, 0, 0].T
        weights[f"{name}.kernel"] = np.ascontiguousarray(kernel)
        bias = state_dict.get(f"{prefix}{name}.bias")
        weights[f"{name}.bias"] = (np.zeros(kernel.shape[1], kernel.dtype) if bias is None
                                   else _numpy(bias))
    if state_dict.get(f"{prefix}dct_weights") is not None:
        weights["dct_weights"] = _numpy(state_dict[f"{prefix}dct_weights"])
    return weights


def block_weights_to_state_dict(weights, prefix: str = "",
                                use_bias: bool = True) -> dict[str, torch.Tensor]:
    """The ``state_dict`` entries of one block from shared-layout weights."""
    block = (weights if isinstance(weights, core_params.BlockParams)
             else core_params.BlockParams.from_dict(dict(weights)))
    state = {}
    for name in core_params.PROJECTIONS:
        kernel = getattr(block, f"{name}_kernel")
        state[f"{prefix}{name}.weight"] = torch.from_numpy(
            np.ascontiguousarray(kernel.T))[:, :, None, None]
        if use_bias:
            state[f"{prefix}{name}.bias"] = torch.from_numpy(
                np.array(getattr(block, f"{name}_bias")))
    if block.dct_weights is not None:
        state[f"{prefix}dct_weights"] = torch.from_numpy(np.array(block.dct_weights))
    return state


def state_dict_to_npz(state_dict, path: str | os.PathLike, prefix: str = "") -> None:
    """Writes one block of a ``state_dict`` (or a ``torch.save`` file of one) as ``.npz``."""
    if isinstance(state_dict, (str, os.PathLike)):
        state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
    core_params.save_npz(path, core_params.BlockParams.from_dict(
        state_dict_to_block_weights(state_dict, prefix)))


def npz_to_state_dict(path: str | os.PathLike, prefix: str = "",
                      use_bias: bool = True) -> dict[str, torch.Tensor]:
    """The ``state_dict`` entries of the block in an ``.npz`` (load with ``strict=False``
    into a model, or ``strict=True`` into a bare block)."""
    return block_weights_to_state_dict(core_params.load_npz(path), prefix, use_bias)


def _numpy(tensor) -> np.ndarray:
    return to_numpy(torch.as_tensor(tensor))


__all__ = [
    "block_weights_to_state_dict",
    "find_blocks",
    "npz_to_state_dict",
    "state_dict_to_block_weights",
    "state_dict_to_npz",
]
