"""enl_torch.ENL against the float64 reference enl_core (docs/ENL-SPEC.md; paper eq. 6, 9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch_block_cases import enl_cases, enl_module, reference_enl, seeds, to_nchw, to_nhwc

import enl_core
import enl_torch
from enl_core.testing import DCT_BASIS_TOLERANCES, assert_close, dct_basis_error


@given(case=enl_cases(), dtype=st.sampled_from([torch.float64, torch.float32]))
def test_forward_matches_reference(case, dtype):
    x, params, kwargs = case
    module = enl_module(params, dtype, **kwargs)
    z = module(to_nchw(x, dtype))
    assert z.dtype == dtype and z.shape == to_nchw(x).shape
    assert_close(to_nhwc(z), reference_enl(x, params, kwargs), str(dtype))


def _directional_reference(fn, point: np.ndarray, direction: np.ndarray, step=1e-5) -> float:
    """d/dt fn(point + t direction) at 0, central differences on the float64 reference."""
    return (fn(point + step * direction) - fn(point - step * direction)) / (2 * step)


@given(case=enl_cases(max_side=7), seed=seeds)
def test_gradients_match_reference(case, seed):
    """Input and weight gradients equal the reference's derivatives, projected
    on random directions (one per tensor), for loss = sum(z * w)."""
    x, params, kwargs = case
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=x.shape)
    module = enl_module(params, **kwargs)
    inputs = to_nchw(x).requires_grad_()
    loss = (module(inputs) * to_nchw(weights)).sum()
    loss.backward()

    def loss_of(x_value, block):
        return float(np.sum(reference_enl(x_value, block, kwargs) * weights))

    direction = rng.normal(size=x.shape)
    expected = _directional_reference(lambda v: loss_of(v, params), x, direction)
    actual = float(np.sum(to_nhwc(inputs.grad) * direction))
    assert_close(actual, expected, "float64", gradient=True, err_msg="d loss / d x")

    grads = {name: p.grad for name, p in module.named_parameters()}
    for name, value in params.as_dict().items():
        if name == "dct_weights" and not isinstance(kwargs["dct_weights"], str):
            continue
        direction = rng.normal(size=value.shape)

        def perturbed(v, name=name):
            return loss_of(x, enl_core.BlockParams.from_dict({**params.as_dict(), name: v}))

        expected = _directional_reference(perturbed, value, direction)
        grad = _shared_layout_grad(grads, name)
        assert_close(float(np.sum(grad * direction)), expected, "float64", gradient=True,
                     err_msg=f"d loss / d {name}")


def _shared_layout_grad(grads: dict, name: str) -> np.ndarray:
    """A torch parameter gradient in the shared (in, out) layout."""
    projection, kind = name.split(".") if name != "dct_weights" else (name, None)
    if kind == "kernel":
        return grads[f"{projection}.weight"][:, :, 0, 0].t().numpy()
    if kind == "bias":
        return grads[f"{projection}.bias"].numpy()
    return grads["dct_weights"].numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("grid", [(5, 4), (2, 3), (1, 1), (11, 3)])
def test_gradcheck(seed, grid):
    """torch.autograd.gradcheck (fast mode: random projections of the Jacobian)
    in float64 w.r.t. the input and every parameter, including grids smaller
    than dct_size."""
    _gradcheck(seed, grid, fast_mode=True)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("grid", [(5, 4), (2, 3), (1, 1)])
def test_gradcheck_full_jacobian(seed, grid):
    """The full-Jacobian gradcheck (about 15 s each on 2 busy cores)."""
    _gradcheck(seed, grid, fast_mode=False)


def _gradcheck(seed, grid, fast_mode):
    torch.manual_seed(seed)
    module = enl_torch.ENL(4, 3, dct_size=(4, 3), dct_weights="learnable",
                           zero_init=False).double()
    with torch.no_grad():
        module.dct_weights.uniform_(0.5, 1.5)
    names = [name for name, _ in module.named_parameters()]
    values = [p.detach().clone().requires_grad_() for p in module.parameters()]
    x = torch.randn(2, 4, *grid, dtype=torch.float64, requires_grad=True)

    def fn(inputs, *params):
        return torch.func.functional_call(module, dict(zip(names, params, strict=True)),
                                          (inputs,))

    assert torch.autograd.gradcheck(fn, (x, *values), fast_mode=fast_mode)


@given(case=enl_cases())
def test_inference_path_equals_autograd_path(case):
    """Without autograd the position term is accumulated in place; both paths
    compute the same numbers."""
    x, params, kwargs = case
    module = enl_module(params, **kwargs)
    inputs = to_nchw(x)
    with torch.no_grad():
        inference = module(inputs)
    training = module(inputs.clone().requires_grad_())
    assert training.requires_grad and not inference.requires_grad
    assert_close(inference.numpy(), training.detach().numpy(), "float64")


def test_zero_init_is_identity_and_trains():
    module = enl_torch.ENL(8)
    x = torch.randn(2, 8, 6, 5)
    assert torch.equal(module(x), x)
    module(x).square().sum().backward()
    assert module.out.weight.grad.abs().sum() > 0


def test_float32_gradients_match_float64():
    x, params, kwargs = _fixed_case()
    grads = {}
    for dtype in (torch.float64, torch.float32):
        module = enl_module(params, dtype, **kwargs)
        inputs = to_nchw(x, dtype).requires_grad_()
        module(inputs).square().sum().backward()
        grads[dtype] = [inputs.grad] + [p.grad for p in module.parameters()]
    for grad32, grad64 in zip(grads[torch.float32], grads[torch.float64], strict=True):
        assert_close(grad32.numpy(), grad64.numpy(), "float32", gradient=True)


def _fixed_case():
    params = enl_core.init_params(16, 8, seed=3, dct_size=(9, 9), dct_weights="random")
    x = np.random.default_rng(3).normal(size=(2, 13, 11, 16))
    kwargs = dict(inter_channels=8, position_encoding=True, dct_size=(9, 9),
                  dct_weights="learnable", zero_init=False)
    return x, params, kwargs


@given(case=enl_cases(), data=st.data())
def test_attention_map_matches_reference(case, data):
    x, params, kwargs = case
    module = enl_module(params, **kwargs)
    height, width = x.shape[1:3]
    position = (data.draw(st.integers(0, height - 1)), data.draw(st.integers(0, width - 1)))
    actual = module.attention_map(to_nchw(x), position)
    expected = enl_core.attention_map(x, params, position, "enl",
                                      position_encoding=kwargs["position_encoding"],
                                      dct_size=kwargs["dct_size"],
                                      dct_weights=params.dct_weights)
    assert actual.shape == (x.shape[0], height, width)
    assert_close(actual.detach().numpy(), expected, "float64")
    flat = module.attention_map(to_nchw(x), position[0] * width + position[1])
    assert torch.equal(flat, actual)


def test_position_term_matches_reference_and_is_the_projector():
    """E-hat (E-hat^T g) equals enl_core's separable and FFT forms, and with
    d = 1 applying it twice changes nothing (L is a projector, eq. 10)."""
    g = np.random.default_rng(0).normal(size=(2, 13, 7, 3))  # B, H, W, C'
    actual = enl_torch.functional.position_term(to_nchw(g), (9, 9), None)
    for b in range(2):
        assert_close(to_nhwc(actual)[b], enl_core.dct.apply_position_fft(g[b]), "float64")
    twice = enl_torch.functional.position_term(actual, (9, 9), None)
    assert_close(twice.numpy(), actual.numpy(), "float64")


@pytest.mark.parametrize("size", [1, 2, 9, 64, 257])
def test_dct_basis_matches_reference(size):
    basis = enl_torch.functional.dct_basis(size, 9, torch.float64, torch.device("cpu"))
    expected = np.zeros((size, 9))
    kept = min(size, 9)
    expected[:, :kept] = enl_core.dct.dct_basis(size)[:, :kept]
    assert_close(basis.numpy(), expected, "float64")
    basis32 = enl_torch.functional.dct_basis(size, 9, torch.float32, torch.device("cpu"))
    assert_close(basis32.numpy(), expected, "float32")


@pytest.mark.parametrize("size", [4097, 65_536])
def test_float32_dct_basis_on_a_large_grid_meets_the_shared_bound(size):
    # The bound the Keras basis meets too: both reduce the phase modulo 4n
    # (enl_core.dct.dct_phase) before the float32 cos.
    basis = enl_torch.functional.dct_basis(size, 9, torch.float32, torch.device("cpu"))
    assert dct_basis_error(basis.numpy(), size) < DCT_BASIS_TOLERANCES["float32"]
