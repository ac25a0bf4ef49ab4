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
    and no N x (kH kW) matrix (docs/ENL-SPEC.md). Each contraction is a matmul whose
    left operand is a small basis broadcast over the batch, so g is never
    transposed.
    """
    height, width, inter = ops.shape(g)[1], ops.shape(g)[2], g.shape[-1]
    dct_scale = crop_dct_scale(dct_scale, height, width)
    k_h, k_w = dct_scale.shape
    basis_h = dct_basis(height, k_h, g.dtype)  # H, kH
    basis_w = dct_basis(width, k_w, g.dtype)  # W, kW
    # E-hat^T g: contract W (per image row), then H.
    rows = matmul(ops.transpose(basis_w), ops.reshape(g, (-1, width, inter)))  # B H, kW, C'
    rows = ops.reshape(rows, (-1, height, k_w * inter))  # B, H, kW C'
    coefficients = matmul(ops.transpose(basis_h), rows)  # B, kH, kW C'
    coefficients = ops.reshape(coefficients, (-1, k_h, k_w, inter)) * dct_scale[:, :, None]
    # E-hat S: expand H, then W.
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


def enl(x, projection_kernel, projection_bias, output_kernel, output_bias, dct_scale=None):
    """The ENL block (eq. 6, 9): ``z = out(theta^T (phi g) / N + E-hat (E-hat^T g)) + x``.

    Args:
        x: (B, H, W, C) in the compute dtype; H, W may be dynamic.
        projection_kernel: (C, 3 C'), theta | phi | g kernels side by side.
        projection_bias: (3 C',) or None.
        output_kernel: (C', C). output_bias: (C,) or None.
        dct_scale: d^2 (kH, kW) in :func:`accumulation_dtype`, or None for no
            position term.

    Returns:
        (B, H, W, C) in x's dtype. Every intermediate has O(N (C + C'))
        elements per image: the N x N affinity of NL is never formed.
    """
    shape = ops.shape(x)
    accumulate = accumulation_dtype(x.dtype)
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
