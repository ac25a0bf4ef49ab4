"""Shared pieces of the enl-torch block tests: Hypothesis strategies, layout
conversion, the reference call and a dispatch recorder.

The reference is always ``enl_core`` (float64, channels-last); the torch blocks
are NCHW, so every comparison goes through :func:`to_nhwc` / :func:`to_nchw`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import enl_core
import enl_torch

seeds = st.integers(0, 2**16)


def to_nchw(x: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))), dtype=dtype)


def to_nhwc(x: torch.Tensor) -> np.ndarray:
    return x.detach().permute(0, 2, 3, 1).double().cpu().numpy()


@st.composite
def enl_cases(draw, max_side: int = 12):
    """(x NHWC float64, params, kwargs for ENL) with small grids, incl. 1x1 and
    grids smaller than dct_size."""
    batch = draw(st.integers(1, 2))
    height = draw(st.integers(1, max_side))
    width = draw(st.integers(1, max_side))
    channels = draw(st.integers(1, 6))
    inter = draw(st.integers(1, 4))
    dct_size = (draw(st.integers(1, 10)), draw(st.integers(1, 10)))
    position = draw(st.booleans())
    dct_kind = draw(st.sampled_from([None, "learnable", "fixed"])) if position else None
    seed = draw(seeds)
    params = enl_core.init_params(channels, inter, seed=seed,
                                  dct_size=dct_size if dct_kind else None,
                                  dct_weights="random" if dct_kind else None)
    rng = np.random.default_rng(seed + 1)
    x = rng.normal(size=(batch, height, width, channels))
    kwargs = dict(inter_channels=inter, position_encoding=position, dct_size=dct_size,
                  dct_weights={None: None, "learnable": "learnable",
                               "fixed": params.dct_weights}[dct_kind],
                  zero_init=False)
    return x, params, kwargs


def enl_module(params: enl_core.BlockParams, dtype=torch.float64, **kwargs) -> enl_torch.ENL:
    module = enl_torch.ENL(params.channels, **kwargs).to(dtype)
    module.set_block_weights(params)
    return module


def reference_enl(x: np.ndarray, params: enl_core.BlockParams, kwargs: dict) -> np.ndarray:
    return enl_core.enl_block(x, params, kwargs["position_encoding"], kwargs["dct_size"],
                              params.dct_weights)


@dataclasses.dataclass
class Call:
    """One aten op: its tensor operands, then its tensor outputs."""

    name: str
    shapes: list[tuple]
    dtypes: list[torch.dtype]


class ShapeRecorder(TorchDispatchMode):
    """Records the shape and dtype of every tensor each aten op reads or writes."""

    def __init__(self):
        super().__init__()
        self.calls: list[Call] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [value for value in torch.utils._pytree.tree_leaves((args, kwargs, out))
                   if isinstance(value, torch.Tensor)]
        self.calls.append(Call(str(func), [tuple(t.shape) for t in tensors],
                               [t.dtype for t in tensors]))
        return out

    def largest(self) -> tuple[int, str]:
        """(numel, "op shape") of the largest tensor any op touched."""
        return max((int(np.prod(shape, dtype=np.int64)), f"{call.name} {shape}")
                   for call in self.calls for shape in call.shapes)
