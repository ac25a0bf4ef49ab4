"""``enl_torch.ENL``: the Efficient Non-Local block for NCHW tensors."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from enl_core import dct as core_dct
from enl_core.validation import DEFAULT_DCT_SIZE, normalize_dct_size, normalize_dct_weights
from enl_torch import functional
from enl_torch.base import BlockProjections, _as_bool, to_numpy


class ENL(BlockProjections):
    """Efficient Non-Local block (Levi & Ullman, BMVC 2019, eq. 6, 9), NCHW.

    ``y = theta^T (phi g) / N + E-hat (E-hat^T g)``, ``z = out(y) + x``: the
    dot-product non-local block of Wang et al. plus the low-frequency DCT
    relative-position term, computed without the N x N affinity (O(N C'^2)
    time, C' x C' memory). Any input size works: the DCT bases are built for
    the runtime (H, W), and ``dct_size`` is clamped to the grid.

    Args:
        in_channels: C.
        inter_channels: C' of theta, phi, g; default ``max(C // 2, 1)``.
        position_encoding: add the DCT position term (eq. 9).
        dct_size: (kH, kW) low frequencies kept, or one int; the paper uses 9 x 9.
        dct_weights: d of eq. 10: None (ones, the paper's choice), a real array
            or tensor of shape ``dct_size`` (a fixed buffer: a tensor's values are
            copied and detached, gradients do not reach it), or ``"learnable"``
            (an ``nn.Parameter`` initialised to ones).
        zero_init: zero ``out`` so that a new block is the identity.
        use_bias: biases on the four 1x1 projections.

    Parameters (``state_dict`` keys; see :mod:`enl_torch.base` for the layouts):
        ``theta.weight`` / ``phi.weight`` / ``g.weight`` (C', C, 1, 1),
        ``out.weight`` (C, C', 1, 1), their ``.bias``, and ``dct_weights``
        (kH, kW) when set.

    Raises:
        ValueError / TypeError: a bad argument (named, with the value received),
            and in ``forward`` an input that is not a floating (B, C, H, W) tensor.

    Example:
        >>> block = ENL(256)                       # identity at init (zero_init)
        >>> z = block(torch.randn(2, 256, 50, 68))  # same shape, any H, W
    """

    def __init__(self, in_channels: int, inter_channels: int | None = None,
                 position_encoding: bool = True, dct_size=DEFAULT_DCT_SIZE, dct_weights=None,
                 zero_init: bool = True, use_bias: bool = True) -> None:
        super().__init__(in_channels, inter_channels, zero_init, use_bias)
        self.position_encoding = _as_bool("position_encoding", position_encoding)
        self.dct_size = normalize_dct_size(dct_size)
        self.learnable_dct_weights = isinstance(dct_weights, str)
        if self.learnable_dct_weights:
            if dct_weights != "learnable":
                raise ValueError(f"`dct_weights` must be None, an array of shape "
                                 f"dct_size={self.dct_size} or 'learnable', received "
                                 f"{dct_weights!r}")
            self.dct_weights = nn.Parameter(torch.ones(self.dct_size))
        elif dct_weights is None:
            self.register_buffer("dct_weights", None)
        else:
            if isinstance(dct_weights, torch.Tensor):
                # A fixed d: its values are copied, not its autograd graph.
                dct_weights = (to_numpy(dct_weights) if not dct_weights.is_complex()
                               else dct_weights.detach().cpu().numpy())
            weights = normalize_dct_weights(dct_weights, self.dct_size)
            self.register_buffer("dct_weights", torch.tensor(weights, dtype=torch.float32))
        if dct_weights is not None and not self.position_encoding:
            raise ValueError(f"`dct_weights` needs position_encoding=True, received "
                             f"dct_weights={dct_weights!r} with position_encoding=False")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialises the projections (``out`` zeroed when ``zero_init``) and
        a learnable d to ones."""
        super().reset_parameters()
        if self.learnable_dct_weights:
            nn.init.ones_(self.dct_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        functional.check_input(x, self.in_channels, "ENL")
        dct_size, dct_weights = functional.clamp_dct(self.dct_size, self.dct_weights, x.shape[2],
                                                     x.shape[3])
        weight, bias = self._fused_projection()
        return functional.enl(x, weight, bias, self._out_projection(), self.out.bias,
                              self.position_encoding, dct_size, dct_weights)

    def attention_map(self, x: torch.Tensor, position) -> torch.Tensor:
        """Row ``i`` of the effective affinity ``F + L`` as (B, H, W) maps (paper Fig. 1).

        ``F[i, j] = theta_i . phi_j / N``; ``L`` is added when
        ``position_encoding``. O(N) work: the N x N matrix is never built.

        Args:
            x: (B, C, H, W).
            position: a flat index ``i = row * W + col`` or a pair ``(row, col)``.

        Raises:
            ValueError: ``position`` outside the grid, or a bad ``x``.
        """
        functional.check_input(x, self.in_channels, "ENL")
        batch, _, height, width = x.shape
        row, col = core_dct.position_index(position, height, width)
        weight, bias = self._fused_projection()
        projected = functional.project(x.reshape(batch, self.in_channels, -1), weight, bias)
        theta, phi, _ = projected.split(self.inter_channels, dim=1)  # B, C', N
        index = row * width + col
        affinity = torch.einsum("bc,bcn->bn", theta[:, :, index], phi) / (height * width)
        if self.position_encoding:
            dct_size, dct_weights = functional.clamp_dct(self.dct_size, self.dct_weights,
                                                         height, width)
            affinity = affinity + functional.position_row(
                height, width, row, col, dct_size, dct_weights, affinity.dtype,
                affinity.device).reshape(1, -1)
        return affinity.reshape(batch, height, width)

    def _dct_weights_array(self) -> np.ndarray | None:
        if self.dct_weights is None:
            return None
        return to_numpy(self.dct_weights)

    @torch.no_grad()
    def _set_dct_weights_array(self, weights: np.ndarray | None) -> None:
        if self.dct_weights is None:
            if weights is not None and not np.all(np.asarray(weights) == 1.0):
                raise ValueError(f"`dct_weights` given but this ENL was built with "
                                 f"dct_weights=None (d = 1); build it with an array or "
                                 f"'learnable'; received {np.asarray(weights)!r}")
            return
        # Missing d means ones, the default of a block built with dct_weights=None.
        values = normalize_dct_weights(weights, self.dct_size)
        self.dct_weights.copy_(torch.as_tensor(values))

    def extra_repr(self) -> str:
        d = ("learnable" if self.learnable_dct_weights
             else None if self.dct_weights is None else "fixed")
        return (f"in_channels={self.in_channels}, inter_channels={self.inter_channels}, "
                f"position_encoding={self.position_encoding}, dct_size={self.dct_size}, "
                f"dct_weights={d}, zero_init={self.zero_init}, use_bias={self.use_bias}")
