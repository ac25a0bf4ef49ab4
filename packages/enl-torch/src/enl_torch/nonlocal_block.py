"""``enl_torch.NonLocal``: the non-local block of Wang et al. (the paper's "NL" baseline)."""

from __future__ import annotations

import math

import torch

from enl_core import cost as core_cost
from enl_core import dct as core_dct
from enl_core.blocks import check_nl_options
from enl_core.validation import DEFAULT_DCT_SIZE, normalize_dct_size
from enl_torch import functional
from enl_torch.base import BlockProjections, _as_bool


class NonLocal(BlockProjections):
    """Non-local block of Wang et al. (CVPR 2018; Levi & Ullman eq. 1-4), NCHW.

    Builds the N x N' affinity explicitly (O(N^2) memory): the baseline ENL
    is compared with. ``mode="embedded_gaussian"`` is softmax over j of
    ``theta_i . phi_j`` (scaled by ``1/sqrt(C')`` when ``scale``);
    ``mode="dot_product"`` is ``theta_i . phi_j / N'``, and with
    ``position_encoding`` adds the explicit L, which makes it the same
    function as :class:`~enl_torch.ENL` at O(N^2) cost.

    Args:
        in_channels: C.
        mode: "embedded_gaussian" or "dot_product".
        inter_channels: C'; default ``max(C // 2, 1)``.
        scale: the ``1/sqrt(C')`` of the embedded Gaussian.
        sub_sample: 2x2 max pooling (stride 2, floor) of phi and g, as Wang et al.
        position_encoding: add the explicit DCT position matrix L (eq. 10);
            needs ``mode="dot_product"`` and ``sub_sample=False``.
        dct_size: (kH, kW) of L.
        zero_init: zero ``out`` so that a new block is the identity.
        use_bias: biases on the four 1x1 projections.

    Parameters: the same names and layouts as :class:`~enl_torch.ENL`
    (``theta``, ``phi``, ``g``, ``out``; see :mod:`enl_torch.base`).

    Raises:
        ValueError / TypeError: a bad argument, or a bad input in ``forward``.

    Example:
        >>> block = NonLocal(1024, sub_sample=True)   # "+1NL" in res4
        >>> z = block(torch.randn(1, 1024, 32, 32))
    """

    def __init__(self, in_channels: int, mode: str = "embedded_gaussian",
                 inter_channels: int | None = None, scale: bool = True,
                 sub_sample: bool = False, position_encoding: bool = False,
                 dct_size=DEFAULT_DCT_SIZE, zero_init: bool = True, use_bias: bool = True) -> None:
        super().__init__(in_channels, inter_channels, zero_init, use_bias)
        self.scale = _as_bool("scale", scale)
        self.sub_sample = _as_bool("sub_sample", sub_sample)
        self.position_encoding = _as_bool("position_encoding", position_encoding)
        check_nl_options(mode, self.sub_sample, self.position_encoding)
        self.mode = mode
        self.dct_size = normalize_dct_size(dct_size)
        self.reset_parameters()

    def _check_grid(self, x: torch.Tensor) -> None:
        functional.check_input(x, self.in_channels, "NonLocal")
        if self.sub_sample and (x.shape[2] < 2 or x.shape[3] < 2):
            raise ValueError(f"`sub_sample` needs H, W >= 2, received shape {list(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W).

        Raises:
            torch.OutOfMemoryError / RuntimeError: the (B, N, N') affinity cannot
                be allocated; the message names it and its predicted bytes.
        """
        self._check_grid(x)
        if torch.jit.is_scripting():
            return self._block(x)
        return self._block_naming_the_affinity(x)

    def _block(self, x: torch.Tensor) -> torch.Tensor:
        dct_size, _ = functional.clamp_dct(self.dct_size, None, x.shape[2], x.shape[3])
        weight, bias = self._fused_projection()
        return functional.nonlocal_block(x, weight, bias, self._out_projection(), self.out.bias,
                                         self.mode, self.scale, self.sub_sample,
                                         self.position_encoding, dct_size, None)

    @torch.jit.unused
    def _block_naming_the_affinity(self, x: torch.Tensor) -> torch.Tensor:
        # The allocator's own message names neither this block nor the N x N'
        # tensor it could not hold (TorchScript has no try: it gets _block).
        try:
            return self._block(x)
        except RuntimeError as error:  # torch.OutOfMemoryError is one too
            if not isinstance(error, torch.OutOfMemoryError) and "allocate" not in str(error):
                raise
            batch, _, height, width = x.shape
            cost = core_cost.block_cost(height, width, self.in_channels, self.inter_channels,
                                        kind=f"nl_{self.mode}", sub_sample=self.sub_sample)
            keys = cost.affinity_floats // (height * width)
            predicted = batch * cost.affinity_floats * x.element_size()
            raise type(error)(
                f"NonLocal cannot allocate its (B, N, N') = ({batch}, {height * width}, "
                f"{keys}) affinity for a {height}x{width} grid: {predicted} bytes "
                f"({predicted / 2**30:.1f} GiB) of {x.dtype} predicted by enl_core.cost; use "
                f"ENL (no N x N matrix), sub_sample=True or a smaller input. The allocator "
                f"said: {error}") from error

    def attention_map(self, x: torch.Tensor, position) -> torch.Tensor:
        """Row ``i`` of this block's affinity as (B, H', W') maps (paper Fig. 1).

        (H', W') is the grid of phi: (H, W), or (H // 2, W // 2) with
        ``sub_sample``. O(N) work: only the one row is computed.

        Args:
            x: (B, C, H, W).
            position: a flat index ``i = row * W + col`` or a pair ``(row, col)``.
        """
        self._check_grid(x)
        batch, _, height, width = x.shape
        row, col = core_dct.position_index(position, height, width)
        weight, bias = self._fused_projection()
        flat = x.reshape(batch, self.in_channels, -1)
        theta, phi, _ = functional.project(flat, weight, bias).split(self.inter_channels, dim=1)
        grid = (height, width)
        if self.sub_sample:
            grid = (height // 2, width // 2)
            phi = functional.max_pool(phi, height, width)  # B, C', N'
        logits = torch.einsum("bc,bcn->bn", theta[:, :, row * width + col], phi)  # B, N'
        if self.mode == "embedded_gaussian":
            if self.scale:
                logits = logits / math.sqrt(self.inter_channels)
            return torch.softmax(logits, dim=-1).reshape(batch, *grid)
        affinity = logits / phi.shape[2]
        if self.position_encoding:
            dct_size, _ = functional.clamp_dct(self.dct_size, None, height, width)
            affinity = affinity + functional.position_row(
                height, width, row, col, dct_size, None, affinity.dtype,
                affinity.device).reshape(1, -1)
        return affinity.reshape(batch, *grid)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, mode={self.mode!r}, "
                f"inter_channels={self.inter_channels}, scale={self.scale}, "
                f"sub_sample={self.sub_sample}, position_encoding={self.position_encoding}, "
                f"dct_size={self.dct_size}, zero_init={self.zero_init}, "
                f"use_bias={self.use_bias}")
