"""Properties of the reference NL and ENL blocks (docs/ENL-SPEC.md; paper eq. 1-9)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
from core_strategies import block_cases, dct_sizes, seeds, weights_for
from hypothesis import given
from hypothesis import strategies as st

import enl_core
from enl_core import blocks, params
from enl_core.testing import assert_close


@given(n=st.integers(1, 60), inter=st.integers(1, 8), seed=seeds)
def test_associative_identity(n, inter, seed):
    """theta^T (phi g) == (theta^T phi) g (eq. 6)."""
    rng = np.random.default_rng(seed)
    theta, phi, g = (rng.normal(size=(n, inter)) for _ in range(3))
    assert_close(theta @ (phi.T @ g), (theta @ phi.T) @ g, "float64")


@given(case=block_cases(), size=dct_sizes(), position=st.booleans(), data=st.data())
def test_enl_equals_explicit_dot_product_nl_plus_l(case, size, position, data):
    x, channels, inter, seed = case
    block = params.init_params(channels, inter, seed=seed)
    weights = data.draw(weights_for(size))
    fast = enl_core.enl_block(x, block, position, size, weights)
    explicit = enl_core.nonlocal_block(x, block, "dot_product", position_encoding=position,
                                       dct_size=size, dct_weights=weights)
    assert_close(fast, explicit, "float64")


@given(case=block_cases(), size=dct_sizes(), data=st.data())
def test_separable_position_term_equals_dense(case, size, data):
    x, channels, inter, seed = case
    block = params.init_params(channels, inter, seed=seed)
    weights = data.draw(weights_for(size))
    assert_close(enl_core.enl_block(x, block, True, size, weights, separable=True),
                 enl_core.enl_block(x, block, True, size, weights, separable=False), "float64")


@given(case=block_cases())
def test_zero_initialised_out_makes_the_block_the_identity(case):
    x, channels, inter, seed = case
    block = params.init_params(channels, inter, seed=seed, zero_init=True)
    assert_close(enl_core.enl_block(x, block), x, "float64")
    assert_close(enl_core.nonlocal_block(x, block, "embedded_gaussian"), x, "float64")


@given(case=block_cases(), scale=st.booleans())
def test_embedded_gaussian_rows_are_softmax_distributions(case, scale):
    x, channels, inter, seed = case
    block = params.init_params(channels, inter, seed=seed)
    affinity = enl_core.nonlocal_affinity(x, block, "embedded_gaussian", scale)
    assert np.all(affinity >= 0)
    assert_close(affinity.sum(-1), np.ones(affinity.shape[:2]), "float64")
    logits = blocks.project(x.reshape(x.shape[0], -1, channels), block.theta_kernel,
                            block.theta_bias)
    keys = blocks.project(x.reshape(x.shape[0], -1, channels), block.phi_kernel, block.phi_bias)
    scores = logits @ np.swapaxes(keys, 1, 2) / (np.sqrt(inter) if scale else 1.0)
    assert_close(affinity, scipy.special.softmax(scores, axis=-1), "float64")


@given(case=block_cases(), data=st.data())
def test_attention_map_is_a_row_of_the_affinity(case, data):
    x, channels, inter, seed = case
    block = params.init_params(channels, inter, seed=seed)
    _, height, width, _ = x.shape
    row = data.draw(st.integers(0, height - 1))
    col = data.draw(st.integers(0, width - 1))
    maps = enl_core.attention_map(x, block, (row, col))
    full = enl_core.nonlocal_affinity(x, block, position_encoding=True)
    assert maps.shape == (x.shape[0], height, width)
    assert_close(maps.reshape(x.shape[0], -1), full[:, row * width + col], "float64")


@given(case=block_cases(), chunk=st.integers(1, 40), data=st.data())
def test_nonlocal_in_query_chunks_is_the_whole_block(case, chunk, data):
    """``query_chunk`` (what makes the reference affordable at N = 65,536)
    changes the memory, not the numbers, in every mode."""
    x, channels, inter, seed = case
    mode = data.draw(st.sampled_from(sorted(blocks.NL_MODES)))
    sub_sample = data.draw(st.booleans()) and min(x.shape[1:3]) >= 2
    position = mode == "dot_product" and not sub_sample and data.draw(st.booleans())
    block = params.init_params(channels, inter, seed=seed, dct_weights="random")
    kwargs = {"mode": mode, "sub_sample": sub_sample, "position_encoding": position}
    assert_close(enl_core.nonlocal_block(x, block, query_chunk=chunk, **kwargs),
                 enl_core.nonlocal_block(x, block, **kwargs), "float64")


def test_sub_sampled_nl_pools_keys_and_values_2x2():
    x = np.random.default_rng(0).normal(size=(1, 5, 6, 4))
    block = params.init_params(4, 2, seed=1)
    affinity = enl_core.nonlocal_affinity(x, block, "dot_product", sub_sample=True)
    assert affinity.shape == (1, 30, 6)  # N' = (5 // 2) * (6 // 2)
    flat = x.reshape(1, 30, 4)
    phi = (flat @ block.phi_kernel + block.phi_bias).reshape(5, 6, 2)[:4]
    pooled = phi.reshape(2, 2, 3, 2, 2).max(axis=(1, 3)).reshape(6, 2)
    theta = flat[0] @ block.theta_kernel + block.theta_bias
    assert_close(affinity[0], theta @ pooled.T / 6, "float64")


def test_params_npz_round_trip(tmp_path):
    block = params.init_params(6, 3, seed=2, dct_size=(4, 5), dct_weights="random")
    enl_core.save_npz(tmp_path / "block.npz", block)
    loaded = enl_core.load_npz(tmp_path / "block.npz")
    for name, value in block.as_dict().items():
        np.testing.assert_array_equal(loaded.as_dict()[name], value)
    assert block.num_params() == 4 * 6 * 3 + 3 * 3 + 6 + 20


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda b: enl_core.enl_block(np.ones((2, 3, 3)), b), "`x`"),
        (lambda b: enl_core.enl_block(np.ones((1, 3, 3, 5)), b), "channels"),
        (lambda b: enl_core.enl_block(np.ones((1, 3, 3, 4), dtype=int), b), "`x`"),
        (lambda b: enl_core.enl_block(np.ones((1, 3, 3, 4)), b, dct_size=0), "`dct_size`"),
        (lambda b: enl_core.nonlocal_block(np.ones((1, 3, 3, 4)), b, "gaussian"), "`mode`"),
        (lambda b: enl_core.nonlocal_block(np.ones((1, 1, 3, 4)), b, sub_sample=True),
         "`sub_sample`"),
        (lambda b: enl_core.nonlocal_block(np.ones((1, 3, 3, 4)), b, "embedded_gaussian",
                                           position_encoding=True), "`position_encoding`"),
        (lambda b: enl_core.attention_map(np.ones((1, 3, 3, 4)), b, 0, block="x"), "`block`"),
        (lambda b: enl_core.nonlocal_block(np.ones((1, 3, 3, 4)), b, query_chunk=0),
         "`query_chunk`"),
        (lambda b: enl_core.nonlocal_block(np.ones((1, 3, 3, 4)), b, query_chunk="8"),
         "`query_chunk`"),
        (lambda b: enl_core.nonlocal_affinity(np.ones((1, 3, 3, 4)), b, queries=3),
         "`queries`"),
        (lambda b: params.init_params(4, 0), "`inter_channels`"),
        (lambda b: params.init_params(0), "`channels`"),
        (lambda b: params.BlockParams.from_dict({"theta.kernel": np.ones((4, 2))}), "missing"),
        (lambda b: params.BlockParams(**{**{k.replace(".", "_"): v for k, v in
                                            b.as_dict().items()},
                                         "out_kernel": np.ones((4, 2))}), "`out.kernel`"),
    ],
)
def test_bad_input_names_the_argument(call, pattern):
    block = params.init_params(4, 2, seed=0)
    with pytest.raises((ValueError, TypeError, LookupError), match=pattern):
        call(block)
