"""What ENL and NonLocal share: the four 1x1 projections and their weight I/O.

Parameter names and layouts (``state_dict`` keys), so that weights convert
one-to-one to the shared layout of :mod:`enl_core.params` (kernels ``(in, out)``):

=====================  ===================  ==========================================
``state_dict`` key     shape                shared name (``get_block_weights``)
=====================  ===================  ==========================================
``theta.weight``       (C', C, 1, 1)        ``theta.kernel`` = ``weight[:, :, 0, 0].T``
``theta.bias``         (C',)                ``theta.bias``
``phi.weight``         (C', C, 1, 1)        ``phi.kernel``
``phi.bias``           (C',)                ``phi.bias``
``g.weight``           (C', C, 1, 1)        ``g.kernel``
``g.bias``             (C',)                ``g.bias``
``out.weight``         (C, C', 1, 1)        ``out.kernel`` = ``weight[:, :, 0, 0].T``
``out.bias``           (C,)                 ``out.bias``
``dct_weights``        (kH, kW)             ``dct_weights`` (ENL with d set or learnable)
=====================  ===================  ==========================================

``theta``, ``phi``, ``g`` and ``out`` are ordinary ``nn.Conv2d(.., kernel_size=1)``
modules (no bias entries when ``use_bias=False``); the forward concatenates
the three input projections into one ``(3 C', C)`` GEMM.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from enl_core import params as core_params
from enl_core.validation import positive_int


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A float numpy copy; float16 / bfloat16 widen to float32 (numpy has no bfloat16)."""
    tensor = tensor.detach()
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    return tensor.cpu().numpy().copy()


def _kernel(conv: nn.Conv2d) -> np.ndarray:
    """(out, in, 1, 1) torch weight -> (in, out) shared kernel."""
    return np.ascontiguousarray(to_numpy(conv.weight[:, :, 0, 0].t()))


def _bias(conv: nn.Conv2d, reference: np.ndarray) -> np.ndarray:
    if conv.bias is None:
        return np.zeros(reference.shape[1], dtype=reference.dtype)
    return to_numpy(conv.bias)


def _as_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool, received {value!r} of type "
                        f"{type(value).__name__}")
    return bool(value)


class BlockProjections(nn.Module):
    """Base of :class:`~enl_torch.ENL` and :class:`~enl_torch.NonLocal`.

    Owns ``theta``, ``phi``, ``g`` (C -> C') and ``out`` (C' -> C), 1x1
    convolutions, and converts them to and from the shared layout.
    """

    def __init__(self, in_channels: int, inter_channels: int | None, zero_init: bool,
                 use_bias: bool) -> None:
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.inter_channels = (core_params.default_inter_channels(self.in_channels)
                               if inter_channels is None
                               else positive_int("inter_channels", inter_channels))
        self.zero_init = _as_bool("zero_init", zero_init)
        self.use_bias = _as_bool("use_bias", use_bias)
        channels, inter = self.in_channels, self.inter_channels
        self.theta = nn.Conv2d(channels, inter, kernel_size=1, bias=self.use_bias)
        self.phi = nn.Conv2d(channels, inter, kernel_size=1, bias=self.use_bias)
        self.g = nn.Conv2d(channels, inter, kernel_size=1, bias=self.use_bias)
        self.out = nn.Conv2d(inter, channels, kernel_size=1, bias=self.use_bias)

    def reset_parameters(self) -> None:
        """torch's Conv2d initialisation; ``out`` zeroed when ``zero_init``
        (the block starts as the identity, docs/ENL-SPEC.md "The block")."""
        for conv in (self.theta, self.phi, self.g, self.out):
            conv.reset_parameters()
        if self.zero_init:
            nn.init.zeros_(self.out.weight)
            if self.out.bias is not None:
                nn.init.zeros_(self.out.bias)

    def _fused_projection(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The ``(3 C', C)`` ``[theta; phi; g]`` matrix and its bias."""
        weight = torch.cat([self.theta.weight, self.phi.weight, self.g.weight])
        weight = weight.reshape(3 * self.inter_channels, self.in_channels)
        bias: torch.Tensor | None = None
        # Locals, because TorchScript refines Optional only on local names.
        theta_bias, phi_bias, g_bias = self.theta.bias, self.phi.bias, self.g.bias
        if theta_bias is not None and phi_bias is not None and g_bias is not None:
            bias = torch.cat([theta_bias, phi_bias, g_bias])
        return weight, bias

    def _out_projection(self) -> torch.Tensor:
        return self.out.weight.reshape(self.in_channels, self.inter_channels)

    # -- weights in the shared layout ------------------------------------------------

    def _dct_weights_array(self) -> np.ndarray | None:
        return None

    def _set_dct_weights_array(self, weights: np.ndarray | None) -> None:
        # d = 1 is what a block without DCT weights computes; anything else is not.
        if weights is not None and not np.all(np.asarray(weights) == 1.0):
            raise ValueError(f"`dct_weights` given but {type(self).__name__} has no DCT "
                             f"weights (it uses d = 1); received {np.asarray(weights)!r}")

    def get_block_weights(self) -> dict[str, np.ndarray]:
        """The weights in the shared ``(in, out)`` layout of :mod:`enl_core.params`.

        Returns:
            dict with the keys ``enl_core.params.WEIGHT_NAMES`` (+ ``dct_weights``
            when the block has d), float numpy arrays (copies). Biases are zeros
            when ``use_bias=False``.
        """
        weights = {}
        for name in core_params.PROJECTIONS:
            conv = getattr(self, name)
            kernel = _kernel(conv)
            weights[f"{name}.kernel"] = kernel
            weights[f"{name}.bias"] = _bias(conv, kernel)
        dct = self._dct_weights_array()
        if dct is not None:
            weights["dct_weights"] = dct
        return weights

    def get_block_params(self) -> core_params.BlockParams:
        """:meth:`get_block_weights` as an ``enl_core.params.BlockParams``."""
        return core_params.BlockParams.from_dict(self.get_block_weights())

    @torch.no_grad()
    def set_block_weights(self, weights) -> None:
        """Loads weights in the shared layout (a dict or ``BlockParams``), exactly.

        Args:
            weights: keys ``enl_core.params.WEIGHT_NAMES`` (+ optional
                ``dct_weights``), kernels ``(in, out)``.

        Raises:
            TypeError: ``weights`` is neither a mapping nor a ``BlockParams``.
            ValueError: missing/extra keys, shapes that do not match this block,
                non-zero biases for a block built with ``use_bias=False``, or
                ``dct_weights`` for a block without them.
        """
        if isinstance(weights, core_params.BlockParams):
            block = weights
        elif isinstance(weights, Mapping):
            block = core_params.BlockParams.from_dict(dict(weights))
        else:
            raise TypeError(f"`weights` must be a dict or an enl_core.BlockParams, received "
                            f"{type(weights).__name__}")
        expected = (self.in_channels, self.inter_channels)
        received = (block.channels, block.inter_channels)
        if received != expected:
            raise ValueError(f"block weights have (C, C') = {received} but this "
                             f"{type(self).__name__} has (in_channels, inter_channels) = "
                             f"{expected}")
        for name in core_params.PROJECTIONS:
            conv = getattr(self, name)
            kernel = getattr(block, f"{name}_kernel")
            bias = getattr(block, f"{name}_bias")
            if conv.bias is None and np.any(bias != 0):
                raise ValueError(f"`{name}.bias` is non-zero but {type(self).__name__} was "
                                 f"built with use_bias=False")
            conv.weight.copy_(torch.as_tensor(np.ascontiguousarray(kernel.T))[:, :, None, None])
            if conv.bias is not None:
                conv.bias.copy_(torch.as_tensor(bias))
        self._set_dct_weights_array(block.dct_weights)

    def save_npz(self, path: str | os.PathLike) -> None:
        """Writes the framework-neutral ``.npz`` (``enl_core.params.save_npz``)."""
        core_params.save_npz(path, self.get_block_params())

    def load_npz(self, path: str | os.PathLike) -> None:
        """Loads a ``.npz`` written by any framework package (``enl_core.params.load_npz``)."""
        self.set_block_weights(core_params.load_npz(path))
