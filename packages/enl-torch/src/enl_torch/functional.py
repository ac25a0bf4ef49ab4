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
from torch.autograd.function import once_differentiable

from enl_core.validation import DEFAULT_DCT_SIZE


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
    # The phase is reduced modulo 4n in integers (the rule of enl_core.dct.dct_phase,
    # which the Keras basis follows too) so that cos stays accurate in float32 on
    # large grids. Written out, not called: TorchScript compiles only torch code.
    phase = torch.remainder((2 * position + 1) * frequency, 4 * size)  # n, k
    angle = phase.to(dtype) * (math.pi / 2.0) / size
    norm = torch.where(frequency == 0, 1.0, 2.0).to(dtype) / size
    kept = (frequency < size).to(dtype)
    return torch.cos(angle) * torch.sqrt(norm) * kept  # n, k


def clamp_dct(dct_size: tuple[int, int], dct_weights: torch.Tensor | None, height: int,
              width: int) -> tuple[tuple[int, int], torch.Tensor | None]:
    """``dct_size`` clamped to the grid and d cropped to match, before any basis
    is built, so that the work never grows with frequencies the grid cannot hold.

    The rule is ``enl_core.validation.clamp_dct_size`` (``(min(kH, H), min(kW, W))``),
    written here with ``min`` so that TorchScript runs it and ``torch.compile``
    traces it as a symbolic ``Min`` (one graph for every grid). Under
    ``torch.jit.trace`` (the ONNX exporter) a ``min`` would freeze the grid of
    the example input into the graph, so the size is left as it is there: the
    bases then zero the frequencies a smaller grid lacks (same result).
    """
    if torch.jit.is_tracing():
        return dct_size, dct_weights
    size = (min(dct_size[0], height), min(dct_size[1], width))
    if dct_weights is not None:
        # A gather, not a slice: a fresh contiguous (kH', kW') tensor, so that
        # torch.compile needs no guard on whether the crop kept whole rows.
        rows = torch.arange(size[0], device=dct_weights.device).unsqueeze(1)  # kH', 1
        cols = torch.arange(size[1], device=dct_weights.device).unsqueeze(0)  # 1, kW'
        dct_weights = torch.take(dct_weights, rows * dct_weights.shape[1] + cols)
    return size, dct_weights


def _bases(height: int, width: int, dct_size: tuple[int, int], dtype: torch.dtype,
           device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (dct_basis(height, dct_size[0], dtype, device),  # H, kH
            dct_basis(width, dct_size[1], dtype, device))  # W, kW


def _dct_coefficients(t: torch.Tensor, dct_size: tuple[int, int]
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``B_H^T T B_W`` per channel (B, C', kH, kW), with the bases B_H and B_W."""
    batch, inter, height, width = t.shape
    basis_h, basis_w = _bases(height, width, dct_size, t.dtype, t.device)
    # bmm over (B, C' H, W) takes t as the strided slice it is (no copy).
    rows = torch.bmm(t.reshape(batch, inter * height, width),
                     basis_w.expand(batch, width, dct_size[1]))  # B, C' H, kW
    coefficients = basis_h.t() @ rows.reshape(batch, inter, height, dct_size[1])  # B, C', kH, kW
    return coefficients, basis_h, basis_w


def _position_rows(g: torch.Tensor, dct_size: tuple[int, int],
                   dct_weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``B_H (d^2 * B_H^T G B_W)`` (B, C', H, kW) and ``B_W`` (W, kW): the position
    term is their product ``rows @ B_W^T``, left to the caller so that it can
    accumulate it in place (eq. 9, 11)."""
    coefficients, basis_h, basis_w = _dct_coefficients(g, dct_size)
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


def _corner_weight(dct_weights: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | float:
    """``d_00^2``: the position term maps a constant map c to ``d_00^2 c``.

    The DC column of both 1D DCT bases is constant and every other column sums
    to zero, so ``E-hat^T 1 = sqrt(N) e_00`` and ``L 1 = d_00^2 1`` (eq. 10).
    """
    return 1.0 if dct_weights is None else (dct_weights[0, 0] * dct_weights[0, 0]).to(dtype)


def _matvec(matrix: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """(B, M, K) @ (B, K) -> (B, M)."""
    return (matrix @ vector.unsqueeze(-1)).squeeze(-1)


def _add_product_(out: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``out += left @ right`` in place, one batch element at a time.

    (B, M, K) @ (B, K, N) into (B, M, N). On CPU ``baddbmm_`` first copies
    its output into a temporary; ``addmm_`` accumulates where it stands.
    """
    for index in range(out.shape[0]):
        out[index].addmm_(left[index], right[index])
    return out


def _product_sum(left: torch.Tensor, right: torch.Tensor,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """``out + sum_b left[b] @ right[b]``, (B, M, K) @ (B, K, N) -> (M, N),
    accumulated in one buffer (a weight gradient: no (B, M, N) stack, no
    temporaries beside it). ``out`` None starts from zero."""
    start = 0
    if out is None:
        out, start = torch.mm(left[0], right[0]), 1
    for index in range(start, left.shape[0]):
        out.addmm_(left[index], right[index])
    return out


def _accumulate_position(out: torch.Tensor, source: torch.Tensor, height: int, width: int,
                         dct_size: tuple[int, int],
                         dct_weights: torch.Tensor | None) -> torch.Tensor:
    """``out += E-hat (E-hat^T source)`` in place (both (B, C', N), eq. 9, 11).

    Returns:
        the DCT coefficients of ``source`` before the d^2 scaling (B, C', kH, kW).
    """
    batch, inter = source.shape[0], source.shape[1]
    coefficients, basis_h, basis_w = _dct_coefficients(
        source.reshape(batch, inter, height, width), dct_size)  # B, C', kH, kW
    scaled = coefficients
    if dct_weights is not None:
        scaled = coefficients * (dct_weights * dct_weights).to(source.dtype)
    rows = (basis_h @ scaled).reshape(batch, inter * height, dct_size[1])  # B, C' H, kW
    _add_product_(out.view(batch, inter * height, width), rows,
                  basis_w.t().expand(batch, -1, -1))
    return coefficients


class _FusedENL(torch.autograd.Function):
    """The ENL block on (B, C, N) with a hand-written backward (eq. 6, 9).

    Every bias is folded into per-channel constants, so each GEMM writes a
    fresh buffer or accumulates in place, and no bias or residual is copied
    into a GEMM output: with ``theta = theta0 + b_theta`` (``theta0 = W_theta x``,
    likewise phi and g) and ``m`` the mean over positions,

    * ``[phi g]^T / N = g0 phi0^T / N + (m_g0 + b_g) b_phi^T + b_g m_phi0^T``,
    * ``y = y0 + u`` with ``y0 = K theta0 + E-hat E-hat^T g0`` and the
      per-channel ``u = K b_theta + d_00^2 b_g`` (:func:`_corner_weight`),
    * ``z = W_out y0 + (W_out u + b_out) + x``: one pass builds ``x + const``,
      the GEMM accumulates into it.

    The backward does the same with the constants of ``d phi`` and ``d g``.
    Saved: x (the caller's input), the bias-free projection ``[theta0; phi0;
    g0]`` (3 C' x N), ``y0`` (C' x N), the DCT coefficients of g0 (C' x kH kW)
    and C' x C' / C' / C vectors: nothing N x N, no recomputation. The
    backward allocates two activations, the projection gradient (3 C' x N)
    and dx (C x N), whose buffer first holds dy (C' x N, when C' <= C); the
    weight gradients accumulate per batch element into one buffer each.
    """

    @staticmethod
    def forward(ctx, flat, weight, bias, out_weight, out_bias, dct_weights, height, width,
                position_encoding, dct_size):
        batch, n = flat.shape[0], flat.shape[2]
        inter = out_weight.shape[1]
        projected = torch.bmm(weight.expand(batch, -1, -1), flat)  # B, 3C', N (no bias)
        theta, phi, g = projected.split(inter, dim=1)  # B, C', N each
        context = torch.bmm(g, phi.transpose(1, 2)) / n  # B, C', C' ([phi g]^T / N)
        mean_x = shift = None
        if bias is not None:
            theta_bias, phi_bias, g_bias = bias.split(inter)
            mean_x = flat.mean(dim=2)  # B, C
            _, phi_mean, g_mean = (mean_x @ weight.t()).split(inter, dim=1)  # B, C'
            context = (context + (g_mean + g_bias).unsqueeze(2) * phi_bias
                       + g_bias.unsqueeze(1) * phi_mean.unsqueeze(1))
            shift = context @ theta_bias  # B, C' (K b_theta)
        y = torch.bmm(context, theta)  # B, C', N (y0)
        coefficients = None
        if position_encoding:
            coefficients = _accumulate_position(y, g, height, width, dct_size, dct_weights)
            if bias is not None:
                shift = shift + _corner_weight(dct_weights, y.dtype) * bias[2 * inter:]
        constant = None if shift is None else shift @ out_weight.t()  # B, C
        if out_bias is not None:
            constant = out_bias.expand(batch, -1) if constant is None else constant + out_bias
        out_weights = out_weight.expand(batch, -1, -1)
        if constant is None:
            z = torch.baddbmm(flat, out_weights, y)  # B, C, N
        else:
            z = _add_product_(flat + constant.unsqueeze(2), out_weights, y)  # B, C, N
        ctx.save_for_backward(flat, weight, bias, out_weight, out_bias, dct_weights, projected,
                              y, context, shift, mean_x, coefficients)
        ctx.geometry = (height, width, position_encoding, dct_size)
        return z

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (flat, weight, bias, out_weight, out_bias, dct_weights, projected, y, context, shift,
         mean_x, coefficients) = ctx.saved_tensors
        height, width, position_encoding, dct_size = ctx.geometry
        batch, n = flat.shape[0], flat.shape[2]
        inter = out_weight.shape[1]
        theta, phi, g = projected.split(inter, dim=1)  # B, C', N each (bias-free)
        grad_sum = grad.sum(dim=2)  # B, C
        grad_out_weight = _product_sum(grad, y.transpose(1, 2),
                                       None if shift is None else grad_sum.t() @ shift)  # C, C'
        grad_out_bias = None if out_bias is None else grad_sum.sum(0)
        # dy lives in the front of dx's buffer when it fits (C' <= C): it is
        # dead before dx is written, and a dy of its own would leave a C' x N
        # hole in the heap that dx cannot reuse (resident memory, not live).
        grad_x_storage = None
        if ctx.needs_input_grad[0] and inter <= flat.shape[1]:
            grad_x_storage = torch.empty(flat.numel(), dtype=grad.dtype, device=grad.device)
            grad_y = grad_x_storage[:batch * inter * n].view(batch, inter, n)
            torch.bmm(out_weight.t().expand(batch, -1, -1), grad, out=grad_y)  # B, C', N
        else:
            grad_y = torch.bmm(out_weight.t().expand(batch, -1, -1), grad)  # B, C', N
        grad_y_sum = grad_sum @ out_weight  # B, C'
        grad_context = torch.bmm(grad_y, theta.transpose(1, 2))  # B, C', C'
        if bias is not None:
            grad_context = grad_context + grad_y_sum.unsqueeze(2) * bias[:inter]
        grad_projected = torch.empty_like(projected)  # B, 3C', N
        grad_theta, grad_phi, grad_g = grad_projected.split(inter, dim=1)
        torch.bmm(context.transpose(1, 2), grad_y, out=grad_theta)
        torch.bmm(grad_context.transpose(1, 2) / n, g, out=grad_phi)
        torch.bmm(grad_context / n, phi, out=grad_g)
        grad_dct = None
        if position_encoding:
            grad_coefficients = _accumulate_position(grad_g, grad_y, height, width, dct_size,
                                                     dct_weights)  # L is symmetric
            if dct_weights is not None and ctx.needs_input_grad[5]:
                products = (grad_coefficients * coefficients).sum((0, 1))  # kH, kW
                if bias is not None:  # the DC coefficient of the constant b_g
                    products[0, 0] += (grad_y_sum * bias[2 * inter:]).sum()
                grad_dct = (2 * dct_weights * products).to(dct_weights.dtype)
        del grad_y
        grad_bias = shift_rows = None
        if bias is not None:
            phi_bias, g_bias = bias[inter:2 * inter], bias[2 * inter:]
            _, phi_mean, g_mean = (mean_x @ weight.t()).split(inter, dim=1)  # B, C'
            grad_context_t = grad_context.transpose(1, 2)
            # d phi and d g are the GEMMs above plus these per-channel constants.
            shift_rows = torch.cat([torch.zeros_like(phi_mean), grad_context_t @ g_bias / n,
                                    grad_context @ phi_bias / n], dim=1)  # B, 3C'
            grad_g_bias = _matvec(grad_context, phi_mean + phi_bias)
            if position_encoding:
                grad_g_bias = grad_g_bias + _corner_weight(dct_weights, g.dtype) * grad_y_sum
            grad_bias = torch.cat([_matvec(context.transpose(1, 2), grad_y_sum),
                                   _matvec(grad_context_t, g_mean + g_bias),
                                   grad_g_bias], dim=1).sum(0)  # 3C'
        grad_weight = _product_sum(grad_projected, flat.transpose(1, 2),
                                   None if shift_rows is None
                                   else n * shift_rows.t() @ mean_x)  # 3C', C
        grad_x = None
        if ctx.needs_input_grad[0]:
            weights_t = weight.t().expand(batch, -1, -1)
            grad_x = (torch.empty_like(flat, memory_format=torch.contiguous_format)
                      if grad_x_storage is None else grad_x_storage.view(flat.shape))
            if shift_rows is None:
                grad_x.copy_(grad)
            else:
                torch.add(grad, (shift_rows @ weight).unsqueeze(2), out=grad_x)
            _add_product_(grad_x, weights_t, grad_projected)  # B, C, N
        return (grad_x, grad_weight, grad_bias, grad_out_weight, grad_out_bias, grad_dct,
                None, None, None, None)


def _use_fused(x: torch.Tensor) -> bool:
    """The hand-written autograd path runs in eager float32 / float64 without
    autocast; TorchScript, the tracer (trace, ONNX) and torch.compile take the
    plain path, whose autograd they derive themselves."""
    if torch.jit.is_scripting():
        return False
    return _eager_use_fused(x)


@torch.jit.unused
def _eager_use_fused(x: torch.Tensor) -> bool:
    return (not torch.jit.is_tracing() and not torch.compiler.is_compiling()
            and x.dtype in (torch.float32, torch.float64) and _eager_autocast_device(x) == "")


@torch.jit.unused
def _fused_enl(flat: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               out_weight: torch.Tensor, out_bias: torch.Tensor | None, height: int, width: int,
               position_encoding: bool, dct_size: tuple[int, int],
               dct_weights: torch.Tensor | None) -> torch.Tensor:
    return _FusedENL.apply(flat, weight, bias, out_weight, out_bias, dct_weights, height, width,
                           position_encoding, dct_size)


def _out_float32(device: str, y: torch.Tensor, out_weight: torch.Tensor,
                 out_bias: torch.Tensor | None, flat: torch.Tensor) -> torch.Tensor:
    """``out(y) + x`` in float32, cast back to ``flat``'s dtype: y grows with the
    cube of the input (theta^T (phi g)) and overflows float16 well before the
    block's output does."""
    if device != "":
        return _project_without_autocast(device, y, out_weight, out_bias, flat)
    bias = None if out_bias is None else out_bias.float()
    return (project(y.float(), out_weight.float(), bias) + flat.float()).to(flat.dtype)


@torch.jit.unused
def _project_without_autocast(device: str, y: torch.Tensor, out_weight: torch.Tensor,
                              out_bias: torch.Tensor | None,
                              flat: torch.Tensor) -> torch.Tensor:
    with torch.autocast(device_type=device, enabled=False):
        return _out_float32("", y, out_weight, out_bias, flat)


def enl(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
        out_weight: torch.Tensor, out_bias: torch.Tensor | None,
        position_encoding: bool = True, dct_size: tuple[int, int] = DEFAULT_DCT_SIZE,
        dct_weights: torch.Tensor | None = None, fused: bool = True) -> torch.Tensor:
    """The ENL block on an NCHW tensor: ``z = out(y) + x`` (eq. 4, 6, 9).

    Args:
        x: (B, C, H, W) floating tensor.
        weight: (3 C', C) fused ``[theta; phi; g]`` projection; bias (3 C',) or None.
        out_weight: (C, C'); out_bias (C,) or None.
        position_encoding: add the DCT position term.
        dct_size: (kH, kW), clamped to the grid.
        dct_weights: d of shape dct_size, or None for ones.
        fused: in eager float32 / float64 without autocast, run the hand-written
            autograd function (biases and residual folded into the GEMMs, only
            the projections and y saved); False, or under TorchScript, tracing,
            torch.compile or autocast: the plain autograd path. Both compute
            the same numbers.

    Returns:
        (B, C, H, W). Under autocast, or for float16 / bfloat16 inputs, the
        two sums over N (``phi g`` and ``E-hat^T g``) and the products that
        use them run in float32.
    """
    batch, channels, height, width = x.shape
    inter = out_weight.shape[1]
    flat = x.reshape(batch, channels, height * width)  # B, C, N
    if fused and _use_fused(x):
        return _fused_enl(flat, weight, bias, out_weight, out_bias, height, width,
                          position_encoding, dct_size, dct_weights).reshape(x.shape)
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
        return _out_float32(device, y, out_weight, out_bias, flat).reshape(x.shape)
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
                   dct_size: tuple[int, int] = DEFAULT_DCT_SIZE,
                   dct_weights: torch.Tensor | None = None) -> torch.Tensor:
    """The NL block of Wang et al. with its N x N affinity built (eq. 1-4).

    Same weights as :func:`enl`. ``sub_sample`` max-pools phi and g 2x2.
    With ``mode="dot_product"`` and ``position_encoding`` it equals :func:`enl`
    at O(N^2) cost.
    """
    batch, channels, height, width = x.shape
    flat = x.reshape(batch, channels, height * width)  # B, C, N
    device = _autocast_device(x)
    if device != "" or x.dtype in (torch.float16, torch.bfloat16):
        # float32 from the projections on, as enl_keras.ops: the softmax turns
        # any rounding of theta and phi into an error of the affinity (31% with
        # bfloat16 logits; bfloat16 projections under autocast left 3e-4 at
        # input std 10, N = 1,024, measured), and the sums over N' overflow
        # float16. The N x N' product dominates the cost anyway; the affinity
        # takes twice a half-precision one's memory.
        if device != "":
            z = _nonlocal_float32_without_autocast(device, flat, weight, bias, out_weight,
                                                   out_bias, mode, scale, sub_sample, height,
                                                   width, position_encoding, dct_size,
                                                   dct_weights)
        else:
            z = _nonlocal_float32(flat, weight, bias, out_weight, out_bias, mode, scale,
                                  sub_sample, height, width, position_encoding, dct_size,
                                  dct_weights)
        return z.reshape(x.shape)
    theta, phi, g = project(flat, weight, bias).split(out_weight.shape[1], dim=1)  # B, C', N
    y = _nonlocal_mix(theta, phi, g, mode, scale, sub_sample, height, width, position_encoding,
                      dct_size, dct_weights)
    return (project(y, out_weight, out_bias) + flat).reshape(x.shape)


def _nonlocal_float32(flat: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      out_weight: torch.Tensor, out_bias: torch.Tensor | None, mode: str,
                      scale: bool, sub_sample: bool, height: int, width: int,
                      position_encoding: bool, dct_size: tuple[int, int],
                      dct_weights: torch.Tensor | None) -> torch.Tensor:
    """The NL block on (B, C, N), everything after the input in float32; the
    result in ``flat``'s dtype."""
    wide_bias = None if bias is None else bias.float()
    projected = project(flat.float(), weight.float(), wide_bias)  # B, 3C', N
    theta, phi, g = projected.split(out_weight.shape[1], dim=1)
    y = _nonlocal_mix(theta, phi, g, mode, scale, sub_sample, height, width, position_encoding,
                      dct_size, dct_weights)
    return _out_float32("", y, out_weight, out_bias, flat)


@torch.jit.unused
def _nonlocal_float32_without_autocast(device: str, flat: torch.Tensor, weight: torch.Tensor,
                                       bias: torch.Tensor | None, out_weight: torch.Tensor,
                                       out_bias: torch.Tensor | None, mode: str, scale: bool,
                                       sub_sample: bool, height: int, width: int,
                                       position_encoding: bool, dct_size: tuple[int, int],
                                       dct_weights: torch.Tensor | None) -> torch.Tensor:
    with torch.autocast(device_type=device, enabled=False):
        return _nonlocal_float32(flat, weight, bias, out_weight, out_bias, mode, scale,
                                 sub_sample, height, width, position_encoding, dct_size,
                                 dct_weights)


def _nonlocal_mix(theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor, mode: str,
                  scale: bool, sub_sample: bool, height: int, width: int,
                  position_encoding: bool, dct_size: tuple[int, int],
                  dct_weights: torch.Tensor | None) -> torch.Tensor:
    """``y = g A^T`` with the explicit (B, N, N') affinity A (eq. 1-3): (B, C', N)."""
    if sub_sample:
        phi = max_pool(phi, height, width)  # B, C', N'
        g = max_pool(g, height, width)  # B, C', N'
    affinity = nonlocal_affinity(theta, phi, mode, scale, height, width, position_encoding,
                                 dct_size, dct_weights)  # B, N, N'
    return torch.bmm(g, affinity.transpose(1, 2))  # B, C', N
