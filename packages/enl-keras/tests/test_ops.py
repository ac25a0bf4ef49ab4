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


# ------------------------------------------------ the hand-written backward
FUSED_CASES = {  # name: (use_bias, position: None | "fixed" | "learnable", grid)
    "bias_position": (True, "fixed", (5, 6)),
    "bias_learnable_d": (True, "learnable", (5, 6)),
    "bias_no_position": (True, None, (7, 7)),
    "no_bias_learnable_d": (False, "learnable", (6, 5)),
    "no_bias_no_position": (False, None, (5, 6)),
    "grid_below_dct_size": (True, "learnable", (2, 3)),  # d^2 cropped to (2, 3)
}


def _fused_arrays(name, dtype, seed=0):
    """x, kernel, out_kernel, then the case's biases and learnable d^2."""
    use_bias, position, grid = FUSED_CASES[name]
    channels, inter = 4, 3
    rng = np.random.default_rng(seed)
    arrays = [rng.normal(size=(2, *grid, channels)), rng.normal(size=(channels, 3 * inter)),
              rng.normal(size=(inter, channels))]
    if use_bias:
        arrays += [rng.normal(size=3 * inter), rng.normal(size=channels)]
    if position == "learnable":
        arrays.append(rng.uniform(0.5, 2.0, size=(3, 4)))
    return [a.astype(dtype) for a in arrays]


def _fused_function(name, fused):
    """ops.enl on the arrays of :func:`_fused_arrays`, fused or plain."""
    use_bias, position, _ = FUSED_CASES[name]
    fixed = np.random.default_rng(9).uniform(0.5, 2.0, size=(3, 4))

    def function(x, kernel, out_kernel, *optional):
        optional = list(optional)
        bias, out_bias = (optional.pop(0), optional.pop(0)) if use_bias else (None, None)
        scale = (optional.pop(0) if position == "learnable" else
                 keras.ops.convert_to_tensor(fixed, x.dtype) if position == "fixed" else None)
        return enl_ops.enl(x, kernel, bias, out_kernel, out_bias, dct_scale=scale, fused=fused)

    return function


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(FUSED_CASES))
def test_fused_enl_and_its_backward_equal_the_plain_ops(name, dtype, gradients):
    """The custom gradient equals the backend's autodiff of the plain ops, for
    the output and every input: x, both kernels, both biases and d^2."""
    arrays = _fused_arrays(name, dtype)
    cotangent = np.random.default_rng(1).normal(size=arrays[0].shape)
    tensors = [keras.ops.convert_to_tensor(a) for a in arrays]
    fused, plain = _fused_function(name, True), _fused_function(name, False)
    assert_close(to_numpy(fused(*tensors)), to_numpy(plain(*tensors)), dtype, err_msg=name)
    pairs = zip(gradients(fused, arrays, cotangent), gradients(plain, arrays, cotangent),
                strict=True)
    for index, (actual, expected) in enumerate(pairs):
        assert_close(actual, expected, dtype, gradient=True, err_msg=f"{name} input {index}")


def test_fused_backward_keeps_only_the_listed_activations():
    """What the backward closes over is what it keeps alive: the input, the
    three bias-free projections and y0 (N-sized), and tensors of fewer than N
    elements. Nothing N x N, no projection with its bias added, no dy."""
    batch, side, channels, inter = 1, 32, 8, 4
    n = side * side
    rng = np.random.default_rng(0)
    x, kernel, bias, out_kernel, out_bias = (keras.ops.convert_to_tensor(a) for a in (
        rng.normal(size=(batch, side, side, channels)), rng.normal(size=(channels, 3 * inter)),
        rng.normal(size=3 * inter), rng.normal(size=(inter, channels)),
        rng.normal(size=channels)))
    scale = keras.ops.ones((7, 7), "float64")
    _, backward = enl_ops._fused_forward(x, kernel, bias, out_kernel, out_bias, scale,
                                         [True, True, True])

    def tensors(value):
        if isinstance(value, (list, tuple)):
            return [t for item in value for t in tensors(item)]
        return [value] if hasattr(value, "shape") and hasattr(value, "dtype") else []

    kept = [t for cell in backward.__closure__ for t in tensors(cell.cell_contents)]
    sizes = sorted((int(np.prod(tuple(t.shape))) for t in kept), reverse=True)
    assert sizes[:5] == [channels * n] + [inter * n] * 4, sizes
    assert sum(sizes[5:]) < n, sizes


def test_fused_must_be_a_bool():
    x = keras.ops.ones((1, 2, 2, 4))
    with pytest.raises(TypeError, match="fused.*'false'"):
        enl_ops.enl(x, keras.ops.ones((4, 6)), None, keras.ops.ones((2, 4)), None,
                    fused="false")
