"""The non-local block of Wang et al. and ENL (paper eq. 1-11), in float64.

Inputs are channels-last ``(B, H, W, C)``; weights follow
:mod:`enl_core.params`. These functions are the ``expected_fn`` every
framework implementation is compared with: plain, explicit, slow.

Every matrix product goes through :func:`matmul` so that the cost model can be
checked against the multiply-adds this code actually performs.
"""

from __future__ import annotations

import numpy as np

from enl_core import dct
from enl_core.params import BlockParams
from enl_core.validation import DEFAULT_DCT_SIZE

NL_MODES = ("dot_product", "embedded_gaussian")


def check_nl_options(mode: str, sub_sample: bool = False, position_encoding: bool = False) -> None:
    """The NL block's option rules, shared by every framework's ``NonLocal``.

    ``mode`` is one of :data:`NL_MODES`; ``position_encoding`` (the explicit L)
    needs ``mode="dot_product"`` and no ``sub_sample``: a softmax row plus L
    is not the paper's block.

    Raises:
        ValueError: naming the argument and the received value.
    """
    if mode not in NL_MODES:
        raise ValueError(f"`mode` must be one of {NL_MODES}, received {mode!r}")
    if position_encoding and (mode != "dot_product" or sub_sample):
        raise ValueError("`position_encoding` needs mode='dot_product' and "
                         f"sub_sample=False, received mode={mode!r}, "
                         f"sub_sample={sub_sample!r}")


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b``; the single place the reference multiplies matrices."""
    return np.matmul(a, b)


def _check_input(x, params: BlockParams) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "fc":
        raise TypeError(f"`x` must be a floating-point array, received dtype {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"`x` must have shape (B, H, W, C), received shape {x.shape}")
    if x.shape[-1] != params.channels:
        raise ValueError(f"`x` has {x.shape[-1]} channels but the weights expect "
                         f"C={params.channels}; received shape {x.shape}")
    if min(x.shape[1:3]) < 1:
        raise ValueError(f"`x` must have a non-empty grid, received shape {x.shape}")
    return x.astype(np.float64)


def project(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A 1x1 convolution over channels: (B, N, C_in) -> (B, N, C_out)."""
    return matmul(x, kernel.astype(np.float64)) + bias.astype(np.float64)


def _max_pool_2x2(x: np.ndarray, height: int, width: int) -> tuple[np.ndarray, int, int]:
    """Wang et al.'s sub-sampling of phi and g: 2x2 max pooling, stride 2, floor."""
    if height < 2 or width < 2:
        raise ValueError(f"`sub_sample` needs H, W >= 2, received grid {height}x{width}")
    batch, _, channels = x.shape
    pooled_h, pooled_w = height // 2, width // 2
    grid = x.reshape(batch, height, width, channels)[:, : 2 * pooled_h, : 2 * pooled_w]
    grid = grid.reshape(batch, pooled_h, 2, pooled_w, 2, channels).max(axis=(2, 4))
    return grid.reshape(batch, pooled_h * pooled_w, channels), pooled_h, pooled_w


def nonlocal_affinity(x, params: BlockParams, mode: str = "dot_product", scale: bool = True,
                      sub_sample: bool = False, position_encoding: bool = False,
                      dct_size=DEFAULT_DCT_SIZE, dct_weights=None,
                      queries: slice | None = None) -> np.ndarray:
    """The explicit (B, N, N') affinity of the NL block, L included if asked.

    ``dot_product``: ``F = theta^T phi / N'`` (eq. 5, N' = positions of phi).
    ``embedded_gaussian``: softmax over j of ``theta_i . phi_j`` (eq. 3),
    scaled by ``1/sqrt(C')`` when ``scale``. ``position_encoding`` adds the
    explicit L (eq. 7 with addition; dot product only: a softmax row plus L is
    not the paper's block). ``queries`` (a slice of the N flattened positions)
    returns only those rows, each against every key: the rows are independent.
    """
    check_nl_options(mode, sub_sample, position_encoding)
    x = _check_input(x, params)
    batch, height, width, channels = x.shape
    flat = x.reshape(batch, height * width, channels)
    if queries is not None and not isinstance(queries, slice):
        raise TypeError(f"`queries` must be None or a slice, received {queries!r}")
    rows = slice(None) if queries is None else queries
    theta = project(flat[:, rows], params.theta_kernel, params.theta_bias)  # B, N, C'
    phi = project(flat, params.phi_kernel, params.phi_bias)  # B, N, C'
    if sub_sample:
        phi, _, _ = _max_pool_2x2(phi, height, width)
    affinity = matmul(theta, np.swapaxes(phi, 1, 2))  # B, N, N'
    if mode == "dot_product":
        affinity = affinity / phi.shape[1]
    else:
        if scale:
            affinity = affinity / np.sqrt(params.inter_channels)
        affinity = affinity - affinity.max(axis=-1, keepdims=True)
        affinity = np.exp(affinity)
        affinity = affinity / affinity.sum(axis=-1, keepdims=True)
    if position_encoding:
        weights = _dct_weights(params, dct_weights)
        if queries is None:
            affinity = affinity + dct.position_matrix(height, width, dct_size, weights)
        else:  # the same rows of L = E-hat E-hat^T
            basis = dct.e_hat(height, width, dct_size, weights)
            affinity = affinity + basis[rows] @ basis.T
    return affinity


def _dct_weights(params: BlockParams, dct_weights):
    return params.dct_weights if dct_weights is None else dct_weights


def nonlocal_block(x, params: BlockParams, mode: str = "dot_product", scale: bool = True,
                   sub_sample: bool = False, position_encoding: bool = False,
                   dct_size=DEFAULT_DCT_SIZE, dct_weights=None,
                   query_chunk: int | None = None) -> np.ndarray:
    """The original NL block (eq. 1-4), its N x N affinity built explicitly.

    ``y = A g`` with A from :func:`nonlocal_affinity`, ``z = out(y) + x``.
    With ``mode="dot_product"`` and ``position_encoding=True`` this is
    ``(theta^T phi / N + L) g``: the function ENL must equal (docs/ENL-SPEC.md).
    ``query_chunk`` builds A that many rows at a time (the same numbers, in
    ``query_chunk x N'`` memory instead of ``N x N'``: N = 65,536 needs 32 GiB
    at once).

    Returns:
        float64 array of the input's shape.
    """
    x = _check_input(x, params)
    if query_chunk is not None and (isinstance(query_chunk, bool)
                                    or not isinstance(query_chunk, (int, np.integer))
                                    or query_chunk < 1):
        raise ValueError(f"`query_chunk` must be None or a positive integer, "
                         f"received {query_chunk!r}")
    batch, height, width, channels = x.shape
    n = height * width
    flat = x.reshape(batch, n, channels)
    g = project(flat, params.g_kernel, params.g_bias)  # B, N, C'
    if sub_sample:
        g, _, _ = _max_pool_2x2(g, height, width)
    starts = [None] if query_chunk is None else range(0, n, int(query_chunk))
    y = np.concatenate([  # B, N, C'
        matmul(nonlocal_affinity(x, params, mode, scale, sub_sample, position_encoding,
                                 dct_size, dct_weights,
                                 None if start is None else slice(start, start + query_chunk)),
               g)
        for start in starts], axis=1)
    z = project(y, params.out_kernel, params.out_bias) + flat
    return z.reshape(x.shape)


def enl_block(x, params: BlockParams, position_encoding: bool = True,
              dct_size=DEFAULT_DCT_SIZE, dct_weights=None, separable: bool = True) -> np.ndarray:
    """ENL (eq. 6, 9): ``y = theta^T (phi g) / N + E-hat (E-hat^T g)``.

    Args:
        x: (B, H, W, C) floating array.
        params: weights in the shared layout; ``params.dct_weights`` is used
            when ``dct_weights`` is None.
        position_encoding: add the DCT position term.
        dct_size: (kH, kW), clamped to the grid.
        dct_weights: d, shape ``dct_size``; None means ones.
        separable: apply E-hat through the 1D bases (the fast path) or
            through the dense N x (kH kW) E-hat.

    Returns:
        float64 array of the input's shape, ``out(y) + x``.
    """
    x = _check_input(x, params)
    batch, height, width, channels = x.shape
    n = height * width
    flat = x.reshape(batch, n, channels)
    theta = project(flat, params.theta_kernel, params.theta_bias)  # B, N, C'
    phi = project(flat, params.phi_kernel, params.phi_bias)  # B, N, C'
    g = project(flat, params.g_kernel, params.g_bias)  # B, N, C'
    context = matmul(np.swapaxes(phi, 1, 2), g)  # B, C', C'  (eq. 6: phi g)
    y = matmul(theta, context) / n  # B, N, C'
    if position_encoding:
        weights = _dct_weights(params, dct_weights)
        y = y + position_term(g.reshape(batch, height, width, -1), dct_size, weights,
                              separable).reshape(batch, n, -1)
    z = project(y, params.out_kernel, params.out_bias) + flat
    return z.reshape(x.shape)


def position_term(g: np.ndarray, dct_size=DEFAULT_DCT_SIZE, dct_weights=None,
                  separable: bool = True) -> np.ndarray:
    """``E-hat (E-hat^T g)`` for a batch ``g`` of shape (B, H, W, C') (eq. 9, 11)."""
    batch, height, width, inter = g.shape
    weights = dct.clamped_weights(height, width, dct_size, dct_weights)
    k_h, k_w = weights.shape
    if separable:
        basis_h = dct.dct_basis(height)[:, :k_h]  # H, kH
        basis_w = dct.dct_basis(width)[:, :k_w]  # W, kW
        # Contract W, then H (the order the cost model counts).
        rows = matmul(np.swapaxes(g, 2, 3), basis_w)  # B, H, C', kW
        coefficients = matmul(basis_h.T, rows.reshape(batch, height, -1))  # B, kH, C' kW
        coefficients = coefficients.reshape(batch, k_h, inter, k_w) * (
            weights**2)[None, :, None, :]
        rows = matmul(basis_h, coefficients.reshape(batch, k_h, -1))  # B, H, C' kW
        spatial = matmul(rows.reshape(batch, height, inter, k_w), basis_w.T)  # B, H, C', W
        return np.swapaxes(spatial, 2, 3)
    basis = dct.e_hat(height, width, dct_size, dct_weights)  # N, kH kW
    flat = g.reshape(batch, height * width, inter)
    coefficients = matmul(basis.T, flat)  # B, kH kW, C'
    return matmul(basis, coefficients).reshape(g.shape)


def attention_map(x, params: BlockParams, position, block: str = "enl", mode: str = "dot_product",
                  scale: bool = True, position_encoding: bool = True,
                  dct_size=DEFAULT_DCT_SIZE, dct_weights=None) -> np.ndarray:
    """Row ``i`` of the effective affinity, as (B, H, W) maps (paper Fig. 1).

    ``block="enl"``: ``(theta_i . phi_j) / N + L[i, j]``; ``block="nl"``: the
    NL block's affinity row for ``mode`` (no sub-sampling).
    """
    x = _check_input(x, params)
    batch, height, width, _ = x.shape
    row, col = dct.position_index(position, height, width)
    index = row * width + col
    if block == "enl":
        affinity = nonlocal_affinity(x, params, "dot_product", position_encoding=position_encoding,
                                     dct_size=dct_size, dct_weights=dct_weights)
    elif block == "nl":
        affinity = nonlocal_affinity(x, params, mode, scale)
    else:
        raise ValueError(f"`block` must be 'enl' or 'nl', received {block!r}")
    return affinity[:, index, :].reshape(batch, height, width)
