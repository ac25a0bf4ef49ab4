"""enl_torch.NonLocal against enl_core.nonlocal_block (Wang et al.; paper eq. 1-5, 7)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch_block_cases import enl_cases, enl_module, seeds, to_nchw, to_nhwc

import enl_core
import enl_torch
from enl_core.testing import assert_close


@st.composite
def nonlocal_cases(draw):
    mode = draw(st.sampled_from(enl_core.blocks.NL_MODES))
    sub_sample = draw(st.booleans())
    position = mode == "dot_product" and not sub_sample and draw(st.booleans())
    low = 2 if sub_sample else 1
    batch, height, width = draw(st.integers(1, 2)), draw(st.integers(low, 9)), draw(
        st.integers(low, 9))
    channels, inter, seed = draw(st.integers(1, 6)), draw(st.integers(1, 4)), draw(seeds)
    dct_size = (draw(st.integers(1, 10)), draw(st.integers(1, 10)))
    params = enl_core.init_params(channels, inter, seed=seed)
    x = np.random.default_rng(seed).normal(size=(batch, height, width, channels))
    kwargs = dict(mode=mode, inter_channels=inter, scale=draw(st.booleans()),
                  sub_sample=sub_sample, position_encoding=position, dct_size=dct_size,
                  zero_init=False)
    return x, params, kwargs


def _module(params, kwargs, dtype=torch.float64):
    module = enl_torch.NonLocal(params.channels, **kwargs).to(dtype)
    module.set_block_weights(params)
    return module


def _reference(x, params, kwargs):
    return enl_core.nonlocal_block(x, params, kwargs["mode"], kwargs["scale"],
                                   kwargs["sub_sample"], kwargs["position_encoding"],
                                   kwargs["dct_size"])


@given(case=nonlocal_cases(), dtype=st.sampled_from([torch.float64, torch.float32]))
def test_forward_matches_reference(case, dtype):
    x, params, kwargs = case
    z = _module(params, kwargs, dtype)(to_nchw(x, dtype))
    assert_close(to_nhwc(z), _reference(x, params, kwargs), str(dtype))


@given(case=nonlocal_cases(), data=st.data())
def test_attention_map_matches_reference_affinity(case, data):
    x, params, kwargs = case
    height, width = x.shape[1:3]
    position = (data.draw(st.integers(0, height - 1)), data.draw(st.integers(0, width - 1)))
    row = _module(params, kwargs).attention_map(to_nchw(x), position)
    affinity = enl_core.nonlocal_affinity(x, params, kwargs["mode"], kwargs["scale"],
                                          kwargs["sub_sample"], kwargs["position_encoding"],
                                          kwargs["dct_size"])  # B, N, N'
    expected = affinity[:, position[0] * width + position[1]]
    grid = (height // 2, width // 2) if kwargs["sub_sample"] else (height, width)
    assert row.shape == (x.shape[0], *grid)
    assert_close(row.detach().numpy().reshape(x.shape[0], -1), expected, "float64")


@given(case=enl_cases(max_side=9))
def test_dot_product_nl_with_position_equals_enl(case):
    """The explicit (theta^T phi / N + L) g equals ENL (docs/ENL-SPEC.md "The reference"); d = 1."""
    x, params, kwargs = case
    kwargs = {**kwargs, "dct_weights": None}  # NonLocal has no d
    params.dct_weights = None
    enl = enl_module(params, **kwargs)
    nl = _module(params, dict(mode="dot_product", inter_channels=kwargs["inter_channels"],
                              position_encoding=kwargs["position_encoding"],
                              dct_size=kwargs["dct_size"], zero_init=False))
    assert_close(nl(to_nchw(x)).detach().numpy(), enl(to_nchw(x)).detach().numpy(), "float64")


@pytest.mark.parametrize("mode", enl_core.blocks.NL_MODES)
@pytest.mark.parametrize("sub_sample", [False, True])
def test_gradcheck(mode, sub_sample):
    torch.manual_seed(0)
    module = enl_torch.NonLocal(4, mode, 2, sub_sample=sub_sample, zero_init=False).double()
    x = torch.randn(1, 4, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), fast_mode=True)
