"""The ENL and NL math for PyTorch, NCHW (Levi & Ullman 2019, eq. 1-11; docs/ENL-SPEC.md).

The one file where the torch blocks compute anything. Every function here is
plain tensor code that ``torch.compile(dynamic=True)``, ``torch.jit.script``
and the ONNX exporter all accept: the DCT bases are built from the runtime
(H, W) with no data-dependent shapes (a grid smaller than ``dct_size`` zeroes
the extra basis columns instead of slicing them off), so one graph serves
every input size.

Weights are passed as matrices: ``weight`` is the fused theta/phi/g projection
``(3 C', C)`` (rows ``[theta; phi; g]``), ``out_weight`` is ``(C, C')``. Biases may
be None. The reference these functions must equal is :mod:`enl_core.blocks`.
"""

import math

import torch
import torch.nn.functional as F

NL_MODES = ("dot_product", "embedded_gaussian")


def check_input(x: torch.Tensor, channels: int, block: str = "ENL") -> None:
    """Raises the argument-naming errors of the Keras layers for a bad block input.

    Raises:
        ValueError: rank != 4, a channel count other than ``channels``, or an
            empty grid.
        TypeError: a non-floating-point tensor.
    """
    if x.dim() != 4:
        raise ValueError(f"`inputs` of {block} must have rank 4 (B, C, H, W), received "
                         f"shape {list(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"`inputs` of {block} must be a floating-point tensor, received "
                        f"dtype {x.dtype}")
    if x.shape[1] != channels:
        raise ValueError(f"`inputs` of {block} must have C={channels} channels (axis 1, "
                         f"in_channels), received shape {list(x.shape)}")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"`inputs` of {block} must have a non-empty H x W grid, received "
                         f"shape {list(x.shape)}")


def dct_basis(size: int, frequencies: int, dtype: torch.dtype,
              device: torch.device) -> torch.Tensor:
    """The first ``frequencies`` columns of the 1D orthonormal DCT-II basis (eq. 8).

    ``B[p, k] = sqrt(a_k / n) cos(pi (2p + 1) k / (2n))`` for ``n = size``;
    columns ``k >= size`` are zero, which is exactly the spec's clamping
    ``k = min(k, n)`` without a shape that depends on ``size``.

    Returns:
        (size, frequencies) tensor.
    """
    position = torch.arange(size, device=device).unsqueeze(1)  # n, 1
    frequency = torch.arange(frequencies, device=device).unsqueeze(0)  # 1, k
    # The phase is reduced modulo 4n in integers so that cos stays accurate in
    # float32 for large grids.
    phase = torch.remainder((2 * position + 1) * frequency, 4 * size)  # n, k
    angle = phase.to(dtype) * (math.pi / 2.0) / size
    norm = torch.where(frequency == 0, 1.0, 2.0).to(dtype) / size
    kept = (frequency < size).to(dtype)
    return torch.cos(angle) * torch.sqrt(norm) * kept  # n, k


def _bases(height: int, width: int, dct_size: tuple[int, int], dtype: torch.dtype,
           device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (dct_basis(height, dct_size[0], dtype, device),  # H, kH
            dct_basis(width, dct_size[1], dtype, device))  # W, kW


def _position_rows(g: torch.Tensor, dct_size: tuple[int, int],
                   dct_weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``B_H (d^2 * B_H^T G B_W)`` (B, C', H, kW) and ``B_W`` (W, kW): the position
    term is their product ``rows @ B_W^T``, left to the caller so that it can
    accumulate it in place (eq. 9, 11)."""
    batch, inter, height, width = g.shape
    basis_h, basis_w = _bases(height, width, dct_size, g.dtype, g.device)
    # bmm over (B, C' H, W) takes g as the strided slice it is (no copy).
    rows = torch.bmm(g.reshape(batch, inter * height, width),
                     basis_w.expand(batch, width, dct_size[1]))  # B, C' H, kW
    coefficients = basis_h.t() @ rows.reshape(batch, inter, height, dct_size[1])  # B, C', kH, kW
    if dct_weights is not None:
        coefficients = coefficients * (dct_weights * dct_weights).to(g.dtype)
    return basis_h @ coefficients, basis_w  # B, C', H, kW


def position_term(g: torch.Tensor, dct_size: tuple[int, int],
                  dct_weights: torch.Tensor | None) -> torch.Tensor:
    """``E-hat (E-hat^T g)`` per channel, through the separable bases (eq. 9, 11).

    Args:
        g: (B, C', H, W).
        dct_size: (kH, kW) before clamping to the grid.
        dct_weights: d, (kH, kW), or None for ones.

    Returns:
        (B, C', H, W), O(N (kH + kW) C') work, no N x N or N x kH kW matrix.
    """
    rows, basis_w = _position_rows(g, dct_size, dct_weights)
    return rows @ basis_w.t()  # B, C', H, W


def position_row(height: int, width: int, row: int, col: int, dct_size: tuple[int, int],
                 dct_weights: torch.Tensor | None, dtype: torch.dtype,
                 device: torch.device) -> torch.Tensor:
    """Row ``i = row * W + col`` of L = E-hat E-hat^T as an (H, W) map, O(N)."""
    basis_h, basis_w = _bases(height, width, dct_size, dtype, device)
    coefficients = basis_h[row].unsqueeze(1) * basis_w[col].unsqueeze(0)  # kH, kW
    if dct_weights is not None:
        coefficients = coefficients * (dct_weights * dct_weights).to(dtype)
    return basis_h @ coefficients @ basis_w.t()  # H, W


def e_hat(height: int, width: int, dct_size: tuple[int, int],
          dct_weights: torch.Tensor | None, dtype: torch.dtype,
          device: torch.device) -> torch.Tensor:
    """The dense N x (kH kW) E-hat, column (k, l) scaled by d (eq. 10); NL only."""
    basis_h, basis_w = _bases(height, width, dct_size, dtype, device)
    dense = basis_h[:, None, :, None] * basis_w[None, :, None, :]  # H, W, kH, kW
    if dct_weights is not None:
        dense = dense * dct_weights.to(dtype)
    return dense.reshape(height * width, dct_size[0] * dct_size[1])


def project(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1x1 convolution as one GEMM: (B, C_in, N) -> (B, C_out, N)."""
    if bias is None:
        return torch.matmul(weight, x)
    return torch.baddbmm(bias.unsqueeze(-1).expand(x.shape[0], -1, x.shape[2]),
                         weight.expand(x.shape[0], -1, -1), x)


def _autocast_device(x: torch.Tensor) -> str:
    """The device type whose autocast is on for ``x``, or "" when it is off."""
    if torch.jit.is_scripting():
        return ""  # TorchScript has its own autocast pass; eager autocast cannot reach it.
    return _eager_autocast_device(x)


@torch.jit.unused
def _eager_autocast_device(x: torch.Tensor) -> str:
    device = x.device.type
    if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
        return device
    return ""


def _mix(theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor, height: int, width: int,
         position_encoding: bool, dct_size: tuple[int, int],
         dct_weights: torch.Tensor | None) -> torch.Tensor:
    """``y = theta^T (phi g) / N + E-hat (E-hat^T g)`` in NCHW (eq. 6, 9): (B, C', N)."""
    batch, inter = g.shape[0], g.shape[1]
    context = torch.bmm(g, phi.transpose(1, 2)) / (height * width)  # B, C', C' ([phi g]^T / N)
    if not position_encoding:
        return torch.bmm(context, theta)  # B, C', N
    rows, basis_w = _position_rows(g.reshape(batch, inter, height, width), dct_size,
                                   dct_weights)  # B, C', H, kW
    differentiable = torch.is_grad_enabled() and (
        theta.requires_grad or g.requires_grad or rows.requires_grad)
    if differentiable or torch.jit.is_tracing():
        # Autograd (and the tracer behind TorchScript trace / ONNX export) would
        # copy around an in-place update of a view: one more GEMM input instead.
        position = (rows @ basis_w.t()).reshape(batch, inter, height * width)  # B, C', N
        return torch.baddbmm(position, context, theta)
    # Inference: accumulate E-hat S into y in place (a fresh C' x N temporary
    # costs about as much on CPU as the product itself).
    y = torch.bmm(context, theta)  # B, C', N
    y.view(batch * inter * height, width).addmm_(rows.reshape(-1, dct_size[1]), basis_w.t())
    return y


@torch.jit.unused
def _mix_float32(device: str, theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor,
                 height: int, width: int, position_encoding: bool, dct_size: tuple[int, int],
                 dct_weights: torch.Tensor | None) -> torch.Tensor:
    """:func:`_mix` with autocast off: ``phi g`` and ``E-hat^T g`` each sum N
    products, which float32 keeps finite and accurate at N = 65,536 where
    float16 overflows and bfloat16 loses the sum."""
    with torch.autocast(device_type=device, enabled=False):
        return _mix(theta.float(), phi.float(), g.float(), height, width, position_encoding,
                    dct_size, dct_weights)


def enl(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
        out_weight: torch.Tensor, out_bias: torch.Tensor | None,
        position_encoding: bool = True, dct_size: tuple[int, int] = (9, 9),
        dct_weights: torch.Tensor | None = None) -> torch.Tensor:
    """The ENL block on an NCHW tensor: ``z = out(y) + x`` (eq. 4, 6, 9).

    Args:
        x: (B, C, H, W) floating tensor.
        weight: (3 C', C) fused ``[theta; phi; g]`` projection; bias (3 C',) or None.
        out_weight: (C, C'); out_bias (C,) or None.
        position_encoding: add the DCT position term.
        dct_size: (kH, kW), clamped to the grid.
        dct_weights: d of shape dct_size, or None for ones.

    Returns:
        (B, C, H, W). Under autocast, or for float16 / bfloat16 inputs, the
        two sums over N (``phi g`` and ``E-hat^T g``) and the products that
        use them run in float32.
    """
    batch, channels, height, width = x.shape
    inter = out_weight.shape[1]
    flat = x.reshape(batch, channels, height * width)  # B, C, N
    projected = project(flat, weight, bias)  # B, 3C', N
    theta, phi, g = projected.split(inter, dim=1)  # B, C', N each
    device = _autocast_device(x)
    if device != "" or projected.dtype in (torch.float16, torch.bfloat16):
        if device != "":
            y = _mix_float32(device, theta, phi, g, height, width, position_encoding, dct_size,
                             dct_weights)
        else:  # a half-precision module: the same float32 sums, no autocast to turn off
            y = _mix(theta.float(), phi.float(), g.float(), height, width, position_encoding,
                     dct_size, dct_weights)
        out = project(y.to(projected.dtype), out_weight, out_bias)
        return (out + flat).reshape(x.shape)
    y = _mix(theta, phi, g, height, width, position_encoding, dct_size, dct_weights)
    z = torch.baddbmm(flat, out_weight.expand(batch, -1, -1), y)  # B, C, N (residual fused)
    if out_bias is not None:
        z.add_(out_bias.unsqueeze(-1))
    return z.reshape(x.shape)


def max_pool(t: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Wang et al.'s sub-sampling: 2x2 max pooling, stride 2, floor. (B, C', N')."""
    batch, inter = t.shape[0], t.shape[1]
    return F.max_pool2d(t.reshape(batch, inter, height, width), 2).flatten(2)


def nonlocal_affinity(theta: torch.Tensor, phi: torch.Tensor, mode: str, scale: bool,
                      height: int, width: int, position_encoding: bool,
                      dct_size: tuple[int, int],
                      dct_weights: torch.Tensor | None) -> torch.Tensor:
    """The explicit (B, N, N') affinity of the NL block (eq. 3, 5, 7).

    ``theta`` is (B, C', N) and ``phi`` (B, C', N'). ``dot_product``:
    ``theta^T phi / N'`` (+ the explicit L when ``position_encoding``);
    ``embedded_gaussian``: softmax over j, scaled by ``1/sqrt(C')`` if ``scale``.
    """
    affinity = torch.bmm(theta.transpose(1, 2), phi)  # B, N, N'
    if mode == "dot_product":
        affinity = affinity / phi.shape[2]
        if position_encoding:
            basis = e_hat(height, width, dct_size, dct_weights, affinity.dtype,
                          affinity.device)  # N, kH kW
            affinity = affinity + basis @ basis.t()  # + L (eq. 10)
        return affinity
    if scale:
        affinity = affinity / math.sqrt(theta.shape[1])
    return torch.softmax(affinity, dim=-1)


def nonlocal_block(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   out_weight: torch.Tensor, out_bias: torch.Tensor | None,
                   mode: str = "embedded_gaussian", scale: bool = True,
                   sub_sample: bool = False, position_encoding: bool = False,
                   dct_size: tuple[int, int] = (9, 9),
                   dct_weights: torch.Tensor | None = None) -> torch.Tensor:
    """The NL block of Wang et al. with its N x N affinity built (eq. 1-4).

    Same weights as :func:`enl`. ``sub_sample`` max-pools phi and g 2x2.
    With ``mode="dot_product"`` and ``position_encoding`` it equals :func:`enl`
    at O(N^2) cost.
    """
    batch, channels, height, width = x.shape
    inter = out_weight.shape[1]
    flat = x.reshape(batch, channels, height * width)  # B, C, N
    theta, phi, g = project(flat, weight, bias).split(inter, dim=1)  # B, C', N each
    if sub_sample:
        phi = max_pool(phi, height, width)  # B, C', N'
        g = max_pool(g, height, width)  # B, C', N'
    affinity = nonlocal_affinity(theta, phi, mode, scale, height, width, position_encoding,
                                 dct_size, dct_weights)  # B, N, N'
    y = torch.bmm(g, affinity.transpose(1, 2))  # B, C', N
    return (project(y, out_weight, out_bias) + flat).reshape(x.shape)
