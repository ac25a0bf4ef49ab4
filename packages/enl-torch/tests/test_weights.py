"""Weights in the shared layout: get/set, .npz, initialisation, dtypes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import enl_core
import enl_torch
from enl_core.params import WEIGHT_NAMES


@pytest.mark.parametrize("cls", [enl_torch.ENL, enl_torch.NonLocal])
def test_get_block_weights_layout(cls):
    module = cls(10, inter_channels=3, zero_init=False)
    weights = module.get_block_weights()
    assert tuple(weights) == WEIGHT_NAMES
    for name in ("theta", "phi", "g", "out"):
        conv = getattr(module, name)
        np.testing.assert_array_equal(weights[f"{name}.kernel"],
                                      conv.weight[:, :, 0, 0].t().detach().numpy())
        np.testing.assert_array_equal(weights[f"{name}.bias"], conv.bias.detach().numpy())
        assert weights[f"{name}.kernel"].dtype == np.float32
    assert weights["theta.kernel"].shape == (10, 3) and weights["out.kernel"].shape == (3, 10)
    assert enl_core.BlockParams.from_dict(weights).num_params() == (
        enl_core.cost.block_params(10, 3))


@pytest.mark.parametrize("kwargs", [dict(), dict(dct_weights="learnable"),
                                    dict(dct_weights=np.full((9, 9), 0.25)),
                                    dict(use_bias=False)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_set_get_round_trip_is_exact(kwargs, dtype):
    params = enl_core.init_params(10, 4, seed=1)
    if kwargs.get("dct_weights") is not None:
        params.dct_weights = (np.full((9, 9), 0.25) if isinstance(kwargs["dct_weights"], np.ndarray)
                              else np.random.default_rng(0).uniform(0.5, 1.5, (9, 9)))
    if not kwargs.get("use_bias", True):
        for name in ("theta", "phi", "g", "out"):
            setattr(params, f"{name}_bias", np.zeros_like(getattr(params, f"{name}_bias")))
    params = params.astype(np.float32 if dtype == torch.float32 else np.float64)
    module = enl_torch.ENL(10, 4, **kwargs).to(dtype)
    module.set_block_weights(params)
    back = module.get_block_weights()
    for key, value in params.as_dict().items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)
        assert back[key].dtype == value.dtype


def test_missing_dct_weights_mean_ones():
    """A block built with dct_weights=None exports no d; loading that into a
    learnable block sets d = 1, the same function."""
    source = enl_torch.ENL(8, zero_init=False)
    target = enl_torch.ENL(8, dct_weights="learnable")
    with torch.no_grad():
        target.dct_weights.fill_(3.0)
    target.set_block_weights(source.get_block_weights())
    assert torch.equal(target.dct_weights, torch.ones(9, 9))
    x = torch.randn(1, 8, 5, 6)
    assert torch.allclose(target(x), source(x), atol=1e-6)
    source.set_block_weights({**source.get_block_weights(), "dct_weights": np.ones((9, 9))})


def test_npz_round_trip_between_blocks(tmp_path):
    source = enl_torch.ENL(8, dct_weights="learnable", zero_init=False)
    with torch.no_grad():
        source.dct_weights.uniform_(0.5, 1.5)
    source.save_npz(tmp_path / "w.npz")
    target = enl_torch.ENL(8, dct_weights="learnable")
    target.load_npz(tmp_path / "w.npz")
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    nonlocal_block = enl_torch.NonLocal(8, mode="dot_product")
    with pytest.raises(ValueError, match="dct_weights"):
        nonlocal_block.load_npz(tmp_path / "w.npz")  # NonLocal has no d


def test_reset_parameters():
    module = enl_torch.ENL(8, dct_weights="learnable")
    assert torch.count_nonzero(module.out.weight) == 0 and torch.count_nonzero(module.out.bias) == 0
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.fill_(2.0)
    module.reset_parameters()
    assert torch.count_nonzero(module.out.weight) == 0
    assert torch.equal(module.dct_weights, torch.ones(9, 9))
    assert module.theta.weight.abs().max() < 2.0
    plain = enl_torch.ENL(8, zero_init=False)
    assert torch.count_nonzero(plain.out.weight) > 0


def test_half_precision_weights_export_as_float32():
    module = enl_torch.ENL(8).to(torch.bfloat16)
    weights = module.get_block_weights()
    assert all(value.dtype == np.float32 for value in weights.values())


def test_default_inter_channels_and_parameter_count():
    module = enl_torch.ENL(256)
    assert module.inter_channels == 128
    assert sum(p.numel() for p in module.parameters()) == 131_712  # docs/ENL-SPEC.md "Shapes"
    learnable = enl_torch.ENL(256, dct_weights="learnable")
    assert sum(p.numel() for p in learnable.parameters()) == enl_core.cost.block_params(
        256, learnable_dct_weights=True)
    assert enl_torch.ENL(1).inter_channels == 1
