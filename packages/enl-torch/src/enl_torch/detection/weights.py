"""Loading pretrained weights from local files (no downloads, ever).

A file is anything ``torch.save`` wrote: a plain ``state_dict`` (e.g. a
torchvision checkpoint copied from its cache), or a training checkpoint of
:mod:`enl_torch.train` (a dict with a ``"model"`` entry).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

WeightsLike = None | str | os.PathLike | Mapping[str, Any]


def load_state_dict_file(weights: WeightsLike, name: str = "weights") -> dict[str, Any] | None:
    """Returns the state dict of ``weights`` (a path or a mapping), or None.

    Raises:
        TypeError: ``weights`` is neither None, a path nor a mapping (e.g. a
            torchvision ``WeightsEnum``, which would download).
        FileNotFoundError: the path does not exist.
        ValueError: the file holds no state dict.
    """
    if weights is None:
        return None
    if isinstance(weights, Mapping):
        state = weights
    elif isinstance(weights, (str, os.PathLike)):
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"`{name}` file not found: {os.fspath(weights)!r}")
        state = torch.load(weights, map_location="cpu", weights_only=True)
    else:
        raise TypeError(f"`{name}` must be None, a path to a torch.save'd state dict or a "
                        f"mapping (this package never downloads), received "
                        f"{weights!r} of type {type(weights).__name__}")
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]  # an enl_torch.train checkpoint
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise ValueError(f"`{name}` must hold a state dict (str -> tensor), received "
                         f"{type(state).__name__}")
    return dict(state)


def load_allowing_new_blocks(model: nn.Module, state_dict: Mapping[str, Any],
                             new_prefixes: Iterable[str], name: str = "weights") -> None:
    """``model.load_state_dict`` where only the added blocks may be missing.

    Blocks start as the identity (zero-initialised ``out``), so a checkpoint of
    the plain detector is a valid starting point for the ENL one.

    Raises:
        ValueError: any other key is missing or unexpected, or a shape differs.
    """
    prefixes = tuple(new_prefixes)
    try:
        result = model.load_state_dict(dict(state_dict), strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"`{name}` does not fit the model: {error}") from error
    missing = [k for k in result.missing_keys
               if not k.startswith(prefixes) and not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ValueError(f"`{name}` does not fit the model: missing {missing[:8]}, "
                         f"unexpected {list(result.unexpected_keys)[:8]}")
