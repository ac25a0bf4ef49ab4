"""The DCT position term of ENL (paper eq. 8-11), in float64.

Names follow docs/ENL-SPEC.md: ``B`` is the 1D orthonormal DCT-II basis with the
basis functions as columns (``B[p, k] = b_k(p)``), ``E = kron(B_H, B_W)`` the 2D
basis of an H x W grid flattened row-major, ``E-hat`` its low-frequency
columns scaled by d, and ``L = E-hat E-hat^T``.
"""

from __future__ import annotations

import operator

import numpy as np
import scipy.fft

from enl_core.validation import (
    DEFAULT_DCT_SIZE,
    clamp_dct_size,
    normalize_dct_size,
    normalize_dct_weights,
    positive_int,
)


def dct_basis(n: int, frequencies: int | None = None) -> np.ndarray:
    """The n x n orthonormal DCT-II basis, ``B[p, k] = b_k(p)``.

    ``b_k(p) = sqrt(a_k / n) cos(pi (2p + 1) k / (2n))``, ``a_0 = 1``, ``a_k = 2``.
    ``B^T x`` is scipy's ``dct(x, type=2, norm="ortho")``. ``frequencies``
    (1..n, default n) keeps only the first columns, without building the rest.
    """
    n = positive_int("n", n)
    frequencies = n if frequencies is None else positive_int("frequencies", frequencies)
    if frequencies > n:
        raise ValueError(f"`frequencies` must be at most n={n}, received {frequencies!r}")
    p = np.arange(n)[:, None]
    k = np.arange(frequencies)[None, :]
    scale = np.where(k == 0, 1.0, 2.0)
    return np.sqrt(scale / n) * np.cos(dct_angle(dct_phase(p, k, n), n))


def dct_phase(position, frequency, size):
    """``(2p + 1) k mod 4n``: the angle of ``b_k(p)`` in units of ``pi / (2n)``,
    reduced to one period of cos.

    The rule every framework's DCT basis follows. ``pi (2p + 1) k / (2n)``
    computed in float32 reaches ``k pi`` and is rounded at that magnitude
    (cos off by up to 2.3e-6 for k < 9, measured at n = 1,024 to 65,536), and
    beyond ``2 n k > 2**24`` the product ``(2p + 1) k`` itself is no longer
    exact. Reduced in integers first, the angle stays in ``[0, 2 pi)`` (cos
    off by up to 3.8e-7), whatever n and k.

    Args:
        position, frequency: integer arrays (NumPy, torch, TensorFlow or Keras
            tensors: only ``*``, ``+`` and ``%`` are used) of p and k, broadcast.
        size: n (an int or an integer scalar tensor).

    Returns:
        integers in ``[0, 4n)``; :func:`dct_angle` turns them into radians.
    """
    return ((2 * position + 1) * frequency) % (4 * size)


def dct_angle(phase, size):
    """``phase * (pi / 2) / n`` in radians: the angle of a :func:`dct_phase`.

    ``phase`` must already be in the floating dtype wanted; ``size`` may be
    an int or a scalar tensor of that dtype."""
    return phase * (np.pi / 2.0) / size


def dct2_matrix(height: int, width: int) -> np.ndarray:
    """E, the N x N orthonormal 2D DCT-II basis of an H x W grid.

    ``E[(p, q), (k, l)] = b_k^H(p) b_l^W(q)`` with row-major flattening on both
    axes, i.e. ``E = kron(B_H, B_W)``.
    """
    return np.kron(dct_basis(height), dct_basis(width))


def clamped_weights(height: int, width: int, dct_size=DEFAULT_DCT_SIZE,
                    dct_weights=None) -> np.ndarray:
    """The (kH', kW') weights d after clamping ``dct_size`` to the grid.

    Ones (None) and a scalar are built at the clamped size: the work never
    depends on frequencies the grid cannot hold (dct_size=(20000, 20000) on a
    6 x 6 grid costs what (6, 6) costs).
    """
    k_h, k_w = clamp_dct_size(dct_size, height, width)
    if dct_weights is None or (np.ndim(dct_weights) == 0 and not isinstance(dct_weights, str)):
        return normalize_dct_weights(dct_weights, (k_h, k_w))
    return normalize_dct_weights(dct_weights, dct_size)[:k_h, :k_w]


def e_hat(height: int, width: int, dct_size=DEFAULT_DCT_SIZE, dct_weights=None) -> np.ndarray:
    """E-hat: the N x (kH kW) low-frequency columns of E, column (k, l) scaled by d.

    Columns are ordered row-major over (k, l). ``dct_size`` is clamped to the
    grid; ``dct_weights`` has the unclamped shape ``dct_size`` and is cropped
    the same way.
    """
    weights = clamped_weights(height, width, dct_size, dct_weights)
    k_h, k_w = weights.shape
    basis_h = dct_basis(height)[:, :k_h]
    basis_w = dct_basis(width)[:, :k_w]
    return np.kron(basis_h, basis_w) * weights.reshape(1, -1)


def diagonal_weights(height: int, width: int, dct_size=DEFAULT_DCT_SIZE,
                     dct_weights=None) -> np.ndarray:
    """The length-N diagonal of D: d on the kept low frequencies, 0 elsewhere."""
    weights = clamped_weights(height, width, dct_size, dct_weights)
    grid = np.zeros((height, width), dtype=np.float64)
    grid[: weights.shape[0], : weights.shape[1]] = weights
    return grid.reshape(-1)


def position_matrix(height: int, width: int, dct_size=DEFAULT_DCT_SIZE,
                    dct_weights=None) -> np.ndarray:
    """L = E-hat E-hat^T (eq. 8, 10), built explicitly as an N x N matrix."""
    basis = e_hat(height, width, dct_size, dct_weights)
    return basis @ basis.T


def _grid_channels(name: str, g: np.ndarray) -> np.ndarray:
    g = np.asarray(g, dtype=np.float64)
    if g.ndim != 3:
        raise ValueError(f"`{name}` must have shape (H, W, C), received shape {g.shape}")
    return g


def apply_position_dense(g: np.ndarray, dct_size=DEFAULT_DCT_SIZE, dct_weights=None) -> np.ndarray:
    """``L g`` with the explicit N x N L. ``g`` is (H, W, C); returns (H, W, C)."""
    g = _grid_channels("g", g)
    height, width, channels = g.shape
    matrix = position_matrix(height, width, dct_size, dct_weights)
    return (matrix @ g.reshape(height * width, channels)).reshape(g.shape)


def apply_position_separable(g: np.ndarray, dct_size=DEFAULT_DCT_SIZE,
                             dct_weights=None) -> np.ndarray:
    """``E-hat (E-hat^T g)`` through the separable 1D bases (docs/ENL-SPEC.md).

    ``S = B_H[:, :kH]^T G B_W[:, :kW]`` per channel, scaled by d, then
    ``B_H[:, :kH] (d * S) B_W[:, :kW]^T``. Costs O(N (kH + kW) C) and never
    builds an N x (kH kW) matrix. The width is contracted first; the cost
    model counts exactly this order.
    """
    g = _grid_channels("g", g)
    height, width, _ = g.shape
    weights = clamped_weights(height, width, dct_size, dct_weights)
    k_h, k_w = weights.shape
    basis_h = dct_basis(height)[:, :k_h]  # H, kH
    basis_w = dct_basis(width)[:, :k_w]  # W, kW
    # eq. 11: E-hat^T g, contracted over W then H.
    coefficients = np.einsum("hwc,wl->hlc", g, basis_w)  # H, kW, C
    coefficients = np.einsum("hk,hlc->klc", basis_h, coefficients)  # kH, kW, C
    coefficients = coefficients * (weights**2)[:, :, None]
    spatial = np.einsum("hk,klc->hlc", basis_h, coefficients)  # H, kW, C
    return np.einsum("hlc,wl->hwc", spatial, basis_w)  # H, W, C


def apply_position_fft(g: np.ndarray, dct_size=DEFAULT_DCT_SIZE, dct_weights=None) -> np.ndarray:
    """``L g = idct2(d^2 * dct2(g))`` per channel (eq. 11) with scipy.fft."""
    g = _grid_channels("g", g)
    height, width, _ = g.shape
    mask = diagonal_weights(height, width, dct_size, dct_weights).reshape(height, width)
    spectrum = scipy.fft.dctn(g, type=2, norm="ortho", axes=(0, 1))
    return scipy.fft.idctn(spectrum * (mask**2)[:, :, None], type=2, norm="ortho", axes=(0, 1))


def position_filter(height: int, width: int, position, dct_size=DEFAULT_DCT_SIZE,
                    dct_weights=None) -> np.ndarray:
    """Row ``i`` of L as an H x W image: the spatial filter that position ``i``
    applies to g (the paper's Fig. 3 d, e).

    Args:
        height, width: the grid.
        position: a flat index ``i = p * W + q`` or a pair ``(p, q)``.
        dct_size, dct_weights: as in :func:`e_hat`.

    Returns:
        float64 array (H, W).

    Raises:
        ValueError: `position` outside the grid.
    """
    height = positive_int("height", height)
    width = positive_int("width", width)
    row, col = position_index(position, height, width)
    impulse = np.zeros((height, width, 1))
    impulse[row, col, 0] = 1.0
    # L is symmetric, so L e_i (a column) is also row i.
    return apply_position_separable(impulse, dct_size, dct_weights)[:, :, 0]


def _position_int(position, value) -> int:
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        return operator.index(value)  # ints, numpy and torch integer scalars
    except TypeError:
        raise ValueError(f"`position` must be a flat index or a pair (row, col) of integers, "
                        f"received {position!r}") from None


def position_index(position, height: int, width: int) -> tuple[int, int]:
    """(p, q) for a flat index or a pair, checked against the grid."""
    # int() would truncate (1.5, 2) to (1, 2): only integers are positions.
    if isinstance(position, (tuple, list)) and len(position) == 2:
        row, col = (_position_int(position, v) for v in position)
    elif np.ndim(position) == 0:
        flat = _position_int(position, position)
        if not 0 <= flat < height * width:
            raise ValueError(f"`position` must be in [0, {height * width}) for a "
                             f"{height}x{width} grid, received {position!r}")
        row, col = divmod(flat, width)
    else:
        raise ValueError(f"`position` must be a flat index or a pair (row, col), "
                         f"received {position!r}")
    if not (0 <= row < height and 0 <= col < width):
        raise ValueError(f"`position` must lie in the {height}x{width} grid, "
                         f"received {position!r}")
    return row, col


__all__ = [
    "apply_position_dense",
    "apply_position_fft",
    "apply_position_separable",
    "clamped_weights",
    "dct2_matrix",
    "dct_angle",
    "dct_basis",
    "dct_phase",
    "diagonal_weights",
    "e_hat",
    "normalize_dct_size",
    "position_filter",
    "position_index",
    "position_matrix",
]
