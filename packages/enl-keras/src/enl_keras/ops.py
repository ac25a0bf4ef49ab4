"""The ENL and NL math, written once in backend-agnostic ``keras.ops``.

Levi & Ullman, "Efficient Coarse-to-Fine Non-Local Module for the Detection
of Small Objects", BMVC 2019; the numerical contract is docs/ENL-SPEC.md.

Every function here takes and returns plain tensors, channels-last, so the
same code serves the Keras 3 layers (:mod:`enl_keras.layers`, any backend)
and the tf_keras twins (:mod:`enl_keras.garden.layers`: with the TensorFlow
backend ``keras.ops`` runs on the ``tf.Tensor`` a tf_keras layer receives).

Precision (the mixed-precision contract): under a float16 / bfloat16 compute
dtype, ENL runs only the theta / phi / g projections (~90% of its
multiply-adds) in the compute dtype; the whole mix (``phi g``, the theta
product, the position term) and the output projection with the residual run
in :func:`accumulation_dtype` (float32, or float64 for float64 inputs), and
the result is cast back at the end. ``theta (phi g) / N`` grows with the cube
of the input, so in float16 it overflows where the block's output is
representable, and the sums over N = 65,536 positions would overflow or lose
the sum. NonLocal runs in the accumulation dtype from the projections on:
its softmax turns any rounding of the logits into a relative error of the
affinity, and its N x N' product dominates the cost anyway.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from enl_core.dct import dct_angle, dct_phase
from enl_core.validation import clamp_dct_size


def accumulation_dtype(dtype) -> str:
    """The dtype of the sums over N: float64 for float64, else float32."""
    name = getattr(dtype, "name", None) or str(dtype)
    return "float64" if "float64" in name else "float32"


def matmul(a, b):
    """``a @ b`` (broadcasting), keeping float64 float64 on every backend.

    Keras' type promotion maps float64 to float32 outside TensorFlow (JAX's
    default), so ``ops.matmul`` would quietly turn the float64 reference
    checks into float32 ones on the torch backend; einsum keeps the dtype.
    """
    if keras.backend.backend() != "tensorflow" and "float64" in str(a.dtype):
        return ops.einsum("...ij,...jk->...ik", a, b)
    return ops.matmul(a, b)


def project(x, kernel, bias=None):
    """1x1 convolutions as one matmul: (B, N, C_in) @ (C_in, C_out) + bias."""
    y = matmul(x, kernel)
    return y if bias is None else y + bias


def projections(x, projection_kernel, projection_bias=None):
    """theta, phi, g (each B, N, C') of a (B, H, W, C) input.

    The three 1x1 convolutions run as ONE matmul against the fused
    (C, 3 C') kernel: a single large GEMM keeps the BLAS busy where three
    narrow ones would each re-read x (the projections are ~90% of ENL's
    multiply-adds, docs/ENL-SPEC.md "Cost").
    """
    channels = x.shape[-1]
    flat = ops.reshape(x, (-1, _num_positions(x), channels))  # B, N, C
    fused = project(flat, projection_kernel, projection_bias)  # B, N, 3C'
    theta, phi, g = ops.split(fused, 3, axis=-1)  # B, N, C' each
    return flat, theta, phi, g


def dct_basis(length, frequencies: int, dtype="float32"):
    """The first ``frequencies`` columns of the orthonormal DCT-II basis.

    ``B[p, k] = sqrt(a_k / n) cos(pi (2p + 1) k / (2n))``, ``a_0 = 1``,
    ``a_k = 2`` (docs/ENL-SPEC.md eq. 8), shape (length, frequencies). ``length`` may
    be a dynamic (tensor) H or W, so the bases are built at call time and any
    input size works. Columns ``k >= length`` are zeroed: that is the spec's
    clamping ``k = min(k, n)`` done with a mask, which keeps every shape but
    H and W static (XLA and SavedModel export need no dynamic slicing).
    """
    n = ops.cast(length, dtype)
    p = ops.arange(length, dtype="int32")[:, None]  # n, 1
    k = ops.arange(frequencies, dtype="int32")[None, :]  # 1, k
    # The phase is reduced modulo 4n in integers (enl_core.dct.dct_phase, the rule
    # torch follows too) so that cos stays accurate in float32 on large grids.
    angle = dct_angle(ops.cast(dct_phase(p, k, ops.cast(length, "int32")), dtype), n)
    k = ops.cast(k, dtype)
    scale = ops.where(ops.equal(k, 0.0), ops.cast(1.0, dtype), ops.cast(2.0, dtype))
    basis = ops.sqrt(scale / n) * ops.cos(angle)
    return basis * ops.cast(ops.less(k, n), dtype)  # n, k


def position_term(g, dct_scale):
    """``E-hat (E-hat^T g)`` for g of shape (B, H, W, C') (eq. 9, 11).

    ``dct_scale`` is d^2, shape (kH, kW) (static), in g's dtype. When H and
    W are static (eager, torch, a traced shape) it is first cropped to
    ``(min(kH, H), min(kW, W))``, so the work never depends on frequencies
    the grid cannot hold; with a dynamic H or W (a graph traced with unknown
    spatial dims) the bases keep all kH, kW columns, the extra ones zeroed.
    Separable:
    ``S = B_H^T G B_W`` scaled by d^2, then ``B_H S B_W^T``; O(N (kH + kW) C')
    and no N x (kH kW) matrix (docs/ENL-SPEC.md).
    """
    height, width = ops.shape(g)[1], ops.shape(g)[2]
    dct_scale = crop_dct_scale(dct_scale, height, width)
    coefficients, bases = dct_coefficients(g, tuple(dct_scale.shape))
    return dct_expand(coefficients * dct_scale[:, :, None], bases)


def dct_coefficients(g, dct_size):
    """``E-hat^T g`` as (B, kH, kW, C') for g (B, H, W, C'), and the two bases.

    Each contraction is a matmul whose left operand is a small basis
    broadcast over the batch, so g is never transposed. Returns
    ``(coefficients, (basis_h, basis_w))`` for :func:`dct_expand`.
    """
    height, width, inter = ops.shape(g)[1], ops.shape(g)[2], g.shape[-1]
    k_h, k_w = dct_size
    basis_h = dct_basis(height, k_h, g.dtype)  # H, kH
    basis_w = dct_basis(width, k_w, g.dtype)  # W, kW
    # Contract W (per image row), then H.
    rows = matmul(ops.transpose(basis_w), ops.reshape(g, (-1, width, inter)))  # B H, kW, C'
    rows = ops.reshape(rows, (-1, height, k_w * inter))  # B, H, kW C'
    coefficients = matmul(ops.transpose(basis_h), rows)  # B, kH, kW C'
    return ops.reshape(coefficients, (-1, k_h, k_w, inter)), (basis_h, basis_w)


def dct_expand(coefficients, bases):
    """``E-hat S`` as (B, H, W, C') for S (B, kH, kW, C'): expand H, then W."""
    basis_h, basis_w = bases
    height, width = ops.shape(basis_h)[0], ops.shape(basis_w)[0]
    k_h, k_w, inter = coefficients.shape[1], coefficients.shape[2], coefficients.shape[3]
    rows = matmul(basis_h, ops.reshape(coefficients, (-1, k_h, k_w * inter)))  # B, H, kW C'
    spatial = matmul(basis_w, ops.reshape(rows, (-1, k_w, inter)))  # B H, W, C'
    return ops.reshape(spatial, (-1, height, width, inter))  # B, H, W, C'


def crop_dct_scale(dct_scale, height, width):
    """``dct_scale`` cropped to the grid when H and W are static Python ints."""
    if not (isinstance(height, int) and isinstance(width, int)):
        return dct_scale
    k_h, k_w = clamp_dct_size(tuple(dct_scale.shape), height, width)
    if (k_h, k_w) == tuple(dct_scale.shape):
        return dct_scale
    return dct_scale[:k_h, :k_w]


def enl(x, projection_kernel, projection_bias, output_kernel, output_bias, dct_scale=None,
        fused=True):
    """The ENL block (eq. 6, 9): ``z = out(theta^T (phi g) / N + E-hat (E-hat^T g)) + x``.

    Args:
        x: (B, H, W, C) in the compute dtype; H, W may be dynamic.
        projection_kernel: (C, 3 C'), theta | phi | g kernels side by side.
        projection_bias: (3 C',) or None.
        output_kernel: (C', C). output_bias: (C,) or None.
        dct_scale: d^2 (kH, kW) in :func:`accumulation_dtype`, or None for no
            position term.
        fused: for float32 / float64 inputs, run :func:`fused_enl` (the same
            numbers with a hand-written backward); False, or a float16 /
            bfloat16 input: the plain ops, differentiated by the backend.

    Returns:
        (B, H, W, C) in x's dtype. Every intermediate has O(N (C + C'))
        elements per image: the N x N affinity of NL is never formed.
    """
    if not isinstance(fused, bool):
        raise TypeError(f"`fused` must be a bool, received {fused!r} of type "
                        f"{type(fused).__name__}")
    shape = ops.shape(x)
    accumulate = accumulation_dtype(x.dtype)
    if fused and keras.backend.standardize_dtype(x.dtype) == accumulate:
        return fused_enl(x, projection_kernel, projection_bias, output_kernel, output_bias,
                         dct_scale)
    flat, theta, phi, g = projections(x, projection_kernel, projection_bias)
    # Everything after the projections runs in float32 at least: phi g sums N
    # products and theta (phi g) / N is cubic in x, so either overflows
    # float16 where z does not ("Precision" above).
    theta, phi, g = (ops.cast(t, accumulate) for t in (theta, phi, g))  # B, N, C'
    # einsum contracts N directly (a transposed BatchMatMul), without a copy of phi^T.
    context = ops.einsum("bnc,bnd->bcd", phi, g)  # B, C', C'  (eq. 6: phi g)
    context = context / ops.cast(_num_positions(x), accumulate)
    y = matmul(theta, context)  # B, N, C'
    if dct_scale is not None:
        grid = ops.reshape(g, (-1, shape[1], shape[2], g.shape[-1]))  # B, H, W, C'
        y = y + ops.reshape(position_term(grid, dct_scale), ops.shape(y))
    return _output(y, flat, output_kernel, output_bias, shape, x.dtype)


def fused_enl(x, projection_kernel, projection_bias, output_kernel, output_bias,
              dct_scale=None):
    """:func:`enl` for float32 / float64 with a hand-written backward (eq. 6, 9).

    The same numbers as the plain ops (up to rounding). Every bias is folded
    into per-channel constants, so no bias or residual is added to a GEMM
    output of N rows and the saved projections are bias-free: with
    ``theta = theta0 + b_theta`` (``theta0 = x W_theta``, likewise phi and g)
    and ``m`` the mean over positions,

    * ``K = phi^T g / N = phi0^T g0 / N + m_phi0 b_g^T + b_phi (m_g0 + b_g)^T``,
    * ``y = y0 + u`` with ``y0 = theta0 K + E-hat D E-hat^T g0`` and the
      per-channel ``u = b_theta K + d_00^2 b_g`` (L maps a constant map c to
      ``d_00^2 c``: the DC columns of both bases are constant, every other
      column sums to zero),
    * ``z = y0 W_out + (u W_out + b_out) + x``.

    The three projections are three GEMMs against slices of the fused kernel:
    a split of one (N, 3C') product would copy it. Saved for the backward:
    x (the caller's input), ``theta0, phi0, g0`` (3 C' N), ``y0`` (C' N), the
    DCT coefficients of g0 (kH kW C') and C' x C' / C' / C tensors: nothing
    N x N, nothing recomputed. The backward builds ``dy`` (C' N), the three
    projection gradients, joined into one (N, 3C') tensor for one dW and one dx
    GEMM (three dx GEMMs may run at once, each holding an (N, C) output), and
    dx (C N), again with the bias terms as constants. Enabled by :func:`enl`
    for float32 / float64 inputs on every backend (``keras.ops.custom_gradient``).
    """
    shape = ops.shape(x)
    height, width = shape[1], shape[2]
    if dct_scale is not None:
        dct_scale = crop_dct_scale(dct_scale, height, width)
    optional = (projection_bias, output_bias, dct_scale)
    present = [tensor is not None for tensor in optional]
    # Tensors, not variables: a custom gradient must not read a variable itself.
    tensors = [ops.convert_to_tensor(t) for t in
               [x, projection_kernel, output_kernel] + [t for t in optional if t is not None]]

    @ops.custom_gradient
    def block(*tensors):
        x, kernel, out_kernel = tensors[:3]
        bias, out_bias, scale = _unpack(tensors[3:], present)
        return _fused_forward(x, kernel, bias, out_kernel, out_bias, scale, present)

    return block(*tensors)


def _unpack(tensors, present):
    """The optional tensors in ``present``'s order, None where absent."""
    remaining = list(tensors)
    return [remaining.pop(0) if here else None for here in present]


def _fused_forward(x, kernel, bias, out_kernel, out_bias, scale, present):
    """z of :func:`fused_enl` and its backward (``keras.ops.custom_gradient``'s pair)."""
    shape = ops.shape(x)
    height, width, channels = shape[1], shape[2], x.shape[-1]
    inter = out_kernel.shape[0]
    count = ops.cast(height * width, x.dtype)
    flat = ops.reshape(x, (-1, height * width, channels))  # B, N, C
    kernels = [kernel[:, i * inter:(i + 1) * inter] for i in range(3)]  # C, C' each
    theta, phi, g = (matmul(flat, k) for k in kernels)  # B, N, C' each (bias-free)
    context = ops.einsum("bnc,bnd->bcd", phi, g) / count  # B, C', C'  (eq. 6: phi g / N)
    shift = mean_x = means = None
    if bias is not None:
        theta_bias, phi_bias, g_bias = ops.split(bias, 3)
        # ops.sum, not ops.mean: Keras on torch and JAX takes a float64 mean in float32.
        mean_x = ops.sum(flat, axis=1) / count  # B, C
        means = [matmul(mean_x, k) for k in kernels[1:]]  # m_phi0, m_g0: B, C' each
        context = (context + means[0][:, :, None] * g_bias
                   + phi_bias[:, None] * (means[1] + g_bias)[:, None, :])
        shift = ops.einsum("c,bcd->bd", theta_bias, context)  # B, C' (b_theta K)
    y = matmul(theta, context)  # B, N, C' (y0)
    coefficients = bases = None
    if scale is not None:
        grid = ops.reshape(g, (-1, height, width, inter))
        coefficients, bases = dct_coefficients(grid, tuple(scale.shape))  # B, kH, kW, C'
        position = dct_expand(coefficients * scale[:, :, None], bases)  # B, H, W, C'
        y = y + ops.reshape(position, ops.shape(y))
        if bias is not None:
            shift = shift + scale[0, 0] * g_bias
    constant = None if shift is None else matmul(shift, out_kernel)  # B, C
    if out_bias is not None:
        constant = out_bias[None, :] if constant is None else constant + out_bias
    z = matmul(y, out_kernel)  # B, N, C
    z = z + flat if constant is None else z + constant[:, None, :] + flat

    def backward(*args, upstream=None):
        grad = args[0] if upstream is None else upstream
        grad = ops.reshape(grad, ops.shape(flat))  # B, N, C
        grad_sum = ops.sum(grad, axis=1)  # B, C
        grad_out_kernel = ops.einsum("bnc,bnd->cd", y, grad)  # C', C
        if shift is not None:
            grad_out_kernel = grad_out_kernel + ops.einsum("bc,bd->cd", shift, grad_sum)
        grad_y = matmul(grad, ops.transpose(out_kernel))  # B, N, C'
        grad_y_sum = matmul(grad_sum, ops.transpose(out_kernel))  # B, C'
        grad_context = ops.einsum("bnc,bnd->bcd", theta, grad_y)  # B, C', C' (theta^T dy)
        if bias is not None:
            grad_context = grad_context + theta_bias[:, None] * grad_y_sum[:, None, :]
        grad_theta = ops.einsum("bnd,bcd->bnc", grad_y, context)  # B, N, C' (dy K^T)
        grad_phi = matmul(g, ops.transpose(grad_context, (0, 2, 1)) / count)  # B, N, C'
        grad_g = matmul(phi, grad_context / count)  # B, N, C'
        grad_scale = None
        if scale is not None:
            grad_grid = ops.reshape(grad_y, (-1, height, width, inter))
            grad_coefficients, _ = dct_coefficients(grad_grid, tuple(scale.shape))
            position = dct_expand(grad_coefficients * scale[:, :, None], bases)  # L dy
            grad_g = grad_g + ops.reshape(position, ops.shape(grad_g))
            # <dy, E D E^T g>: the DC coefficient of g holds sqrt(N) b_g too.
            grad_scale = ops.sum(grad_coefficients * coefficients, axis=(0, 3))  # kH, kW
            if bias is not None:
                corner = np.zeros(tuple(scale.shape))
                corner[0, 0] = 1.0
                grad_scale = grad_scale + ops.sum(grad_y_sum * g_bias) * ops.convert_to_tensor(
                    corner, flat.dtype)
        del grad_y
        # One (N, 3C') gradient and one GEMM each for dW and dx: three dx GEMMs
        # may run at once, each holding its own (N, C) output.
        grad_projected = ops.concatenate([grad_theta, grad_phi, grad_g], axis=-1)  # B, N, 3C'
        del grad_theta, grad_phi, grad_g
        grad_kernel = ops.einsum("bnc,bnd->cd", flat, grad_projected)  # C, 3C'
        grad_x = grad + matmul(grad_projected, ops.transpose(kernel))  # B, N, C
        grad_bias = None
        if bias is not None:
            # d phi and d g are the GEMMs above plus these per-channel rows.
            phi_row = ops.einsum("bcd,d->bc", grad_context, g_bias) / count  # B, C'
            g_row = ops.einsum("c,bcd->bd", phi_bias, grad_context) / count  # B, C'
            grad_kernel = grad_kernel + ops.concatenate(
                [ops.zeros((channels, inter), flat.dtype),
                 ops.einsum("bc,bd->cd", mean_x * count, phi_row),
                 ops.einsum("bc,bd->cd", mean_x * count, g_row)], axis=1)
            grad_g_bias = ops.einsum("bc,bcd->d", means[0] + phi_bias, grad_context)
            if scale is not None:
                grad_g_bias = grad_g_bias + scale[0, 0] * ops.sum(grad_y_sum, axis=0)
            grad_bias = ops.concatenate(
                [ops.einsum("bd,bcd->c", grad_y_sum, context),
                 ops.einsum("bcd,bd->c", grad_context, means[1] + g_bias), grad_g_bias])
            rows = matmul(phi_row, ops.transpose(kernels[1])) + matmul(
                g_row, ops.transpose(kernels[2]))  # B, C
            grad_x = grad_x + rows[:, None, :]
        optional = [grad_bias, None if out_bias is None else ops.sum(grad_sum, axis=0),
                    grad_scale]
        return tuple([ops.reshape(grad_x, shape), grad_kernel, grad_out_kernel]
                     + [d for d, here in zip(optional, present, strict=True) if here])

    return ops.reshape(z, shape), backward


def _output(y, flat, output_kernel, output_bias, shape, dtype):
    """``out(y) + x`` in y's (accumulation) dtype, cast to ``dtype`` at the end.

    y may exceed the compute dtype's range although ``out(y)`` does not (a
    small ``out`` kernel), so the output projection reads it in float32.
    """
    accumulate = y.dtype
    bias = None if output_bias is None else ops.cast(output_bias, accumulate)
    z = project(y, ops.cast(output_kernel, accumulate), bias) + ops.cast(flat, accumulate)
    return ops.cast(ops.reshape(z, shape), dtype)  # B, H, W, C


def nonlocal_affinity(theta, phi, mode: str = "embedded_gaussian", scale: bool = True):
    """The NL affinity (B, N, N') of Wang et al. for N queries and N' keys.

    ``dot_product``: ``theta phi^T / N'`` (eq. 5); ``embedded_gaussian``:
    softmax over the keys of ``theta phi^T`` (eq. 3), scaled by
    ``1/sqrt(C')`` when ``scale``. With N = 1 query it is one row, O(N').
    """
    logits = matmul(theta, ops.transpose(phi, (0, 2, 1)))  # B, N, N'
    if mode == "dot_product":
        return logits / ops.cast(ops.shape(phi)[1], logits.dtype)
    if scale:
        logits = logits / math.sqrt(phi.shape[-1])
    return ops.softmax(logits, axis=-1)


def max_pool_2x2(values, height, width):
    """Wang et al.'s sub-sampling of phi and g: (B, N, C') -> (B, N/4, C')."""
    inter = values.shape[-1]
    grid = ops.reshape(values, (-1, height, width, inter))
    pooled = ops.max_pool(grid, pool_size=2, strides=2, padding="valid",
                          data_format="channels_last")
    return ops.reshape(pooled, (-1, _num_positions(pooled), inter))


def nonlocal_block(x, projection_kernel, projection_bias, output_kernel, output_bias,
                   mode: str = "embedded_gaussian", scale: bool = True, sub_sample: bool = False,
                   dct_scale=None):
    """The original NL block (eq. 1-4), its N x N' affinity materialised.

    The baseline of the paper's tables. ``dct_scale`` (dot product, no
    sub-sampling) adds the position term, i.e. ``(F + L) g``. The whole
    block from the projections on runs in :func:`accumulation_dtype`: the
    softmax turns any rounding of theta and phi into an error of the
    affinity, and the logits and the sums over N' would overflow float16.
    """
    shape = ops.shape(x)
    accumulate = accumulation_dtype(x.dtype)
    wide = [None if w is None else ops.cast(w, accumulate)
            for w in (projection_kernel, projection_bias)]
    flat, theta, phi, g = projections(ops.cast(x, accumulate), *wide)  # B, N, C' each
    keys, values = phi, g
    if sub_sample:
        keys = max_pool_2x2(phi, shape[1], shape[2])  # B, N', C'
        values = max_pool_2x2(g, shape[1], shape[2])  # B, N', C'
    y = matmul(nonlocal_affinity(theta, keys, mode, scale), values)  # B, N, C'
    if dct_scale is not None:
        grid = ops.reshape(g, (-1, shape[1], shape[2], g.shape[-1]))
        y = y + ops.reshape(position_term(grid, dct_scale), ops.shape(y))
    return _output(y, flat, output_kernel, output_bias, shape, x.dtype)


def attention_row(x, projection_kernel, projection_bias, index, mode: str = "dot_product",
                  scale: bool = True, sub_sample: bool = False, dct_scale=None):
    """Row ``index`` of the effective affinity as (B, H', W') maps, in O(N).

    ``mode="dot_product"`` with ``dct_scale`` is ENL's ``F + L``; the
    ``embedded_gaussian`` row is NL's softmax row. Only the query's theta
    meets the keys, so the row costs N C' (no N x N). The L row is the
    position term applied to an impulse at ``index`` (L is symmetric), so it
    is the very function ENL uses.
    """
    shape = ops.shape(x)
    accumulate = accumulation_dtype(x.dtype)
    # In the accumulation dtype from the projections on, as NonLocal's block.
    wide = [None if w is None else ops.cast(w, accumulate)
            for w in (projection_kernel, projection_bias)]
    _, theta, keys, _ = projections(ops.cast(x, accumulate), *wide)  # B, N, C' each
    query = theta[:, index : index + 1, :]  # B, 1, C'
    height, width = shape[1], shape[2]
    if sub_sample:
        keys = max_pool_2x2(keys, height, width)
        height, width = height // 2, width // 2
    row = nonlocal_affinity(query, keys, mode, scale)  # B, 1, N'
    row = ops.reshape(row, (-1, height, width))  # B, H', W'
    if dct_scale is not None:
        impulse = ops.one_hot(ops.convert_to_tensor([index]), height * width, dtype=accumulate)
        impulse = ops.reshape(impulse, (1, height, width, 1))
        row = row + ops.reshape(position_term(impulse, dct_scale), (1, height, width))
    return row


def _num_positions(x):
    """N = H W of a (B, H, W, C) tensor; a Python int when both are static."""
    shape = ops.shape(x)
    return shape[1] * shape[2]
