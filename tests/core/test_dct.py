"""Properties of the DCT position term (docs/ENL-SPEC.md; paper eq. 8-11)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
from core_strategies import dct_sizes, grids, seeds, weights_for
from hypothesis import given
from hypothesis import strategies as st

from enl_core import dct
from enl_core.testing import DCT_BASIS_TOLERANCES, assert_close, dct_basis_error


@given(n=st.integers(1, 40))
def test_dct_basis_is_orthonormal_and_matches_scipy(n):
    basis = dct.dct_basis(n)
    assert_close(basis.T @ basis, np.eye(n), "float64")
    signal = np.random.default_rng(n).normal(size=n)
    assert_close(basis.T @ signal, scipy.fft.dct(signal, type=2, norm="ortho"), "float64")


@given(n=st.integers(1, 40), data=st.data())
def test_dct_basis_columns_are_the_first_columns(n, data):
    frequencies = data.draw(st.integers(1, n))
    np.testing.assert_array_equal(dct.dct_basis(n, frequencies), dct.dct_basis(n)[:, :frequencies])


@given(n=st.integers(1, 70_000), p=st.integers(0, 69_999), k=st.integers(0, 80))
def test_dct_phase_is_the_angle_reduced_to_one_period(n, p, k):
    p = p % n
    phase = dct.dct_phase(np.array(p), np.array(k), n)
    assert 0 <= phase < 4 * n
    assert (phase - (2 * p + 1) * k) % (4 * n) == 0  # the same angle modulo 2 pi
    unreduced = math.pi * (2 * p + 1) * k / (2 * n)
    assert math.isclose(math.cos(dct.dct_angle(float(phase), n)), math.cos(unreduced),
                        abs_tol=1e-9)


@pytest.mark.parametrize("n", [4097, 65_536])
def test_float32_basis_with_reduced_phase_meets_the_shared_bound(n):
    # The rule the framework bases follow, evaluated in float32 as they do.
    p = np.arange(n)[:, None]
    k = np.arange(9)[None, :]
    angle = dct.dct_angle(dct.dct_phase(p, k, n).astype(np.float32), np.float32(n))
    scale = np.sqrt(np.where(k == 0, 1.0, 2.0) / n).astype(np.float32)
    basis = np.cos(angle.astype(np.float32)) * scale
    assert dct_basis_error(basis, n) < DCT_BASIS_TOLERANCES["float32"]
    unreduced = np.cos(np.float32(np.pi) * (2 * p + 1).astype(np.float32)
                       * k.astype(np.float32) / np.float32(2 * n)) * scale
    assert dct_basis_error(unreduced, n) > DCT_BASIS_TOLERANCES["float32"]  # the bound bites


@given(grid=grids())
def test_e_is_orthonormal_kronecker_and_scipy_dct2(grid):
    height, width = grid
    matrix = dct.dct2_matrix(height, width)
    n = height * width
    assert_close(matrix.T @ matrix, np.eye(n), "float64")
    assert_close(matrix @ matrix.T, np.eye(n), "float64")
    assert_close(matrix, np.kron(dct.dct_basis(height), dct.dct_basis(width)), "float64")
    image = np.random.default_rng(n).normal(size=(height, width))
    # E^T g is the 2D DCT of g (row-major flattening on both sides).
    expected = scipy.fft.dctn(image, type=2, norm="ortho").reshape(-1)
    assert_close(matrix.T @ image.reshape(-1), expected, "float64")


@given(grid=grids(), size=dct_sizes(), data=st.data())
def test_eq10_three_forms_of_l_agree(grid, size, data):
    """E-hat E-hat^T == E D D^T E^T == E (K_D o K_D o E^T)."""
    height, width = grid
    weights = data.draw(weights_for(size))
    matrix = dct.dct2_matrix(height, width)
    diagonal = dct.diagonal_weights(height, width, size, weights)
    d_matrix = np.diag(diagonal)
    k_d = np.repeat(diagonal[:, None], height * width, axis=1)  # K_D[i, j] = d_i
    l_hat = dct.e_hat(height, width, size, weights) @ dct.e_hat(height, width, size, weights).T
    assert_close(l_hat, matrix @ d_matrix @ d_matrix.T @ matrix.T, "float64")
    assert_close(l_hat, matrix @ (k_d * k_d * matrix.T), "float64")
    assert_close(l_hat, dct.position_matrix(height, width, size, weights), "float64")


@given(grid=grids(), size=dct_sizes(), channels=st.integers(1, 4), seed=seeds, data=st.data())
def test_eq11_dense_separable_and_fft_agree(grid, size, channels, seed, data):
    """L g == idct2(d^2 dct2(g)) == E-hat (E-hat^T g) through the 1D bases."""
    height, width = grid
    weights = data.draw(weights_for(size))
    g = np.random.default_rng(seed).normal(size=(height, width, channels))
    dense = dct.apply_position_dense(g, size, weights)
    assert_close(dct.apply_position_fft(g, size, weights), dense, "float64")
    assert_close(dct.apply_position_separable(g, size, weights), dense, "float64")


@given(grid=grids(), size=dct_sizes(), data=st.data())
def test_l_is_symmetric_psd_and_a_projector_for_binary_d(grid, size, data):
    height, width = grid
    weights = data.draw(weights_for(size, binary=True))
    matrix = dct.position_matrix(height, width, size, weights)
    assert_close(matrix, matrix.T, "float64")
    assert np.linalg.eigvalsh(matrix).min() > -1e-10
    assert_close(matrix @ matrix, matrix, "float64")
    kept = dct.diagonal_weights(height, width, size, weights)
    assert math.isclose(np.trace(matrix), kept.sum(), abs_tol=1e-9)


@given(grid=grids(), size=dct_sizes(), data=st.data())
def test_position_filter_sums_to_one_and_peaks_near_the_position(grid, size, data):
    height, width = grid
    row = data.draw(st.integers(0, height - 1))
    col = data.draw(st.integers(0, width - 1))
    image = dct.position_filter(height, width, (row, col), size)
    assert image.shape == (height, width)
    # d_00 = 1: L keeps constant images, so every filter sums to one.
    assert math.isclose(image.sum(), 1.0, abs_tol=1e-9)
    constant = np.ones((height, width, 1))
    assert_close(dct.apply_position_separable(constant, size), constant, "float64")
    k_h, k_w = min(size[0], height), min(size[1], width)
    peak_rows, peak_cols = np.nonzero(np.isclose(image, image.max(), rtol=0, atol=1e-12))
    distance_rows = np.abs(peak_rows - row)
    distance_cols = np.abs(peak_cols - col)
    near = (distance_rows <= math.ceil(height / k_h)) & (distance_cols <= math.ceil(width / k_w))
    assert near.any(), (image, row, col)
    assert_close(image.reshape(-1), dct.position_matrix(height, width, size)[row * width + col],
                 "float64")


def test_full_dct_size_makes_l_the_identity():
    matrix = dct.position_matrix(5, 7, (9, 9))
    assert_close(matrix, np.eye(35), "float64")


def test_clamped_weights_are_cropped_not_resampled():
    weights = np.arange(81, dtype=float).reshape(9, 9)
    assert_close(dct.clamped_weights(3, 12, (9, 9), weights), weights[:3, :], "float64")


@pytest.mark.parametrize("weights", [None, 2.0])
def test_clamped_ones_or_scalar_cost_nothing_beyond_the_grid(weights):
    """dct_size=(6000, 6000) on a 6 x 6 grid once built a 288 MB array of ones
    on every Keras call before cropping it; now the clamped weights are built
    at the grid's size (numpy's allocations are seen by tracemalloc)."""
    import tracemalloc

    tracemalloc.start()
    try:
        clamped = dct.clamped_weights(6, 6, (6000, 6000), weights)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**16, peak
    np.testing.assert_array_equal(clamped, np.full((6, 6), 1.0 if weights is None else weights))
    assert_close(dct.e_hat(6, 6, (6000, 6000), weights), dct.e_hat(6, 6, (6, 6), weights),
                 "float64")


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: dct.dct_basis(0), "`n`"),
        (lambda: dct.dct_basis(2.5), "`n`"),
        (lambda: dct.dct_basis(3, 4), "`frequencies`"),
        (lambda: dct.dct_basis(3, 0), "`frequencies`"),
        (lambda: dct.e_hat(0, 3), "`height`"),
        (lambda: dct.e_hat(3, -1), "`width`"),
        (lambda: dct.e_hat(3, 3, (0, 9)), "`dct_size`"),
        (lambda: dct.e_hat(3, 3, (9, 9, 9)), "`dct_size`"),
        (lambda: dct.e_hat(3, 3, "9x9"), "`dct_size`"),
        (lambda: dct.e_hat(3, 3, (9, 9), np.ones((3, 3))), "`dct_weights`"),
        (lambda: dct.e_hat(3, 3, (2, 2), [[1, np.nan], [1, 1]]), "`dct_weights`"),
        (lambda: dct.e_hat(3, 3, (2, 2), np.nan), "`dct_weights`"),
        (lambda: dct.e_hat(3, 3, (2, 2), 1j), "`dct_weights`"),
        (lambda: dct.e_hat(3, 3, (2, 2), "ones"), "`dct_weights`"),
        (lambda: dct.apply_position_separable(np.ones((3, 3))), "`g`"),
        (lambda: dct.position_filter(3, 3, 9), "`position`"),
        (lambda: dct.position_filter(3, 3, (0, 3)), "`position`"),
    ],
)
def test_bad_input_names_the_argument(call, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        call()
