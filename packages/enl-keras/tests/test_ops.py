"""enl_keras.ops, the shared keras.ops math, against enl_core piece by piece."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import enl_core
from enl_core.testing import DCT_BASIS_TOLERANCES, assert_close, dct_basis_error
from enl_keras import ops as enl_ops


def to_numpy(tensor):
    return np.asarray(keras.ops.convert_to_numpy(tensor))


@pytest.mark.parametrize("length", [1, 2, 7, 9, 64])
@pytest.mark.parametrize("frequencies", [1, 4, 9])
def test_dct_basis_is_the_reference_basis_with_clamping_as_a_mask(length, frequencies):
    basis = to_numpy(enl_ops.dct_basis(length, frequencies, "float64"))
    assert basis.shape == (length, frequencies)
    kept = min(length, frequencies)
    assert_close(basis[:, :kept], enl_core.dct.dct_basis(length)[:, :kept], "float64")
    np.testing.assert_array_equal(basis[:, kept:], 0.0)  # k >= n: clamped away


@pytest.mark.parametrize("length", [4097, 65_536])
def test_float32_dct_basis_on_a_large_grid_meets_the_shared_bound(length):
    # The bound torch's basis meets too: both reduce the phase modulo 4n
    # (enl_core.dct.dct_phase) before the float32 cos.
    basis = to_numpy(enl_ops.dct_basis(length, 9, "float32"))
    assert dct_basis_error(basis, length) < DCT_BASIS_TOLERANCES["float32"]


@pytest.mark.parametrize("grid, dct_size", [((6, 7), (3, 4)), ((4, 3), (9, 9)), ((1, 5), (2, 2)),
                                            ((12, 10), (9, 9))])
def test_position_term_is_l_times_g(grid, dct_size):
    rng = np.random.default_rng(0)
    g = rng.normal(size=(2, *grid, 3))
    weights = rng.uniform(0.5, 1.5, size=dct_size)
    actual = to_numpy(enl_ops.position_term(keras.ops.convert_to_tensor(g),
                                            keras.ops.convert_to_tensor(weights**2)))
    for image in range(2):
        # The dense N x N L and the FFT form: two independent reference paths.
        assert_close(actual[image], enl_core.dct.apply_position_dense(g[image], dct_size, weights),
                     "float64")
        assert_close(actual[image], enl_core.dct.apply_position_fft(g[image], dct_size, weights),
                     "float64")


def test_accumulation_dtype():
    assert enl_ops.accumulation_dtype("float16") == "float32"
    assert enl_ops.accumulation_dtype("bfloat16") == "float32"
    assert enl_ops.accumulation_dtype("float32") == "float32"
    assert enl_ops.accumulation_dtype("float64") == "float64"


def test_enl_and_explicit_nonlocal_are_the_same_function():
    """The associative law (docs/ENL-SPEC.md): ops.enl equals ops.nonlocal_block in
    dot-product form with the position term, both in float64."""
    params = enl_core.init_params(5, 3, seed=4)
    x = keras.ops.convert_to_tensor(np.random.default_rng(4).normal(size=(2, 6, 5, 5)))
    kernel = np.concatenate([params.theta_kernel, params.phi_kernel, params.g_kernel], axis=1)
    bias = np.concatenate([params.theta_bias, params.phi_bias, params.g_bias])
    weights = [keras.ops.convert_to_tensor(w) for w in
               (kernel, bias, params.out_kernel, params.out_bias)]
    scale = keras.ops.ones((3, 3), dtype="float64")
    fast = to_numpy(enl_ops.enl(x, *weights, dct_scale=scale))
    slow = to_numpy(enl_ops.nonlocal_block(x, *weights, mode="dot_product", dct_scale=scale))
    assert_close(fast, slow, "float64")
    assert_close(fast, enl_core.enl_block(to_numpy(x), params, dct_size=(3, 3)), "float64")
