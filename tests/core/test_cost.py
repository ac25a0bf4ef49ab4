"""The cost model counts exactly what the reference computes (Table 3)."""

from __future__ import annotations

import numpy as np
import pytest
from core_strategies import dct_sizes, grids, seeds
from hypothesis import given
from hypothesis import strategies as st

import enl_core
from enl_core import blocks, cost, params


class CountingMatmul:
    """Stands in for ``enl_core.blocks.matmul``: same result, counts MACs and
    the largest product computed."""

    def __init__(self):
        self.macs = 0
        self.largest_output = 0

    def __call__(self, a, b):
        result = np.matmul(a, b)
        inner = a.shape[-1]
        self.macs += int(result.size * inner)
        self.largest_output = max(self.largest_output, int(result[0].size if result.ndim == 3
                                                           else result.size))
        return result


@pytest.fixture
def counter(monkeypatch):
    counting = CountingMatmul()
    monkeypatch.setattr(blocks, "matmul", counting)
    return counting


KINDS = [("enl", None), ("nl_dot_product", "dot_product"),
         ("nl_embedded_gaussian", "embedded_gaussian")]


@given(grid=grids(12), size=dct_sizes(), channels=st.integers(1, 8), inter=st.integers(1, 6),
       position=st.booleans(), separable=st.booleans(), seed=seeds)
def test_enl_macs_equal_the_counted_reference(grid, size, channels, inter, position, separable,
                                              seed):
    counting = CountingMatmul()
    original = blocks.matmul
    blocks.matmul = counting
    try:
        x = np.random.default_rng(seed).normal(size=(1, *grid, channels))
        enl_core.enl_block(x, params.init_params(channels, inter, seed=seed), position, size,
                           separable=separable)
    finally:
        blocks.matmul = original
    predicted = cost.block_cost(*grid, channels, inter, "enl", position, size, separable)
    assert predicted.macs == counting.macs


@given(grid=grids(10), channels=st.integers(1, 8), inter=st.integers(1, 6),
       kind=st.sampled_from(KINDS[1:]), sub_sample=st.booleans(), seed=seeds)
def test_nl_macs_and_affinity_equal_the_counted_reference(grid, channels, inter, kind,
                                                          sub_sample, seed):
    if sub_sample and min(grid) < 2:
        return
    counting = CountingMatmul()
    original = blocks.matmul
    blocks.matmul = counting
    try:
        x = np.random.default_rng(seed).normal(size=(1, *grid, channels))
        enl_core.nonlocal_block(x, params.init_params(channels, inter, seed=seed), kind[1],
                                sub_sample=sub_sample)
    finally:
        blocks.matmul = original
    predicted = cost.block_cost(*grid, channels, inter, kind[0], sub_sample=sub_sample)
    assert predicted.macs == counting.macs
    n = grid[0] * grid[1]
    n_keys = (grid[0] // 2) * (grid[1] // 2) if sub_sample else n
    assert predicted.affinity_floats == n * n_keys


def test_batch_of_two_costs_twice_one_image(counter):
    x = np.random.default_rng(0).normal(size=(2, 6, 7, 5))
    enl_core.enl_block(x, params.init_params(5, 3, seed=0), dct_size=(4, 4))
    assert counter.macs == 2 * cost.block_cost(6, 7, 5, 3, dct_size=(4, 4)).macs


@given(channels=st.integers(1, 64), inter=st.integers(1, 32), learnable=st.booleans(),
       size=dct_sizes())
def test_params_equal_the_arrays_of_a_block(channels, inter, learnable, size):
    block = params.init_params(channels, inter, dct_size=size,
                               dct_weights="random" if learnable else None)
    assert cost.block_params(channels, inter, dct_size=size,
                             learnable_dct_weights=learnable) == block.num_params()


def test_spec_parameter_count_for_c256():
    assert cost.block_params(256) == 131_712


def test_enl_is_linear_and_nl_quadratic_in_n():
    small = cost.block_cost(50, 68, 256, kind="enl")
    large = cost.block_cost(100, 136, 256, kind="enl")
    assert 3.9 < large.macs / small.macs < 4.1
    nl_small = cost.block_cost(50, 68, 256, kind="nl_dot_product")
    nl_large = cost.block_cost(100, 136, 256, kind="nl_dot_product")
    assert nl_large.macs / nl_small.macs > 10
    assert large.affinity_floats == 128 * 128
    assert nl_large.affinity_floats == (100 * 136) ** 2


def test_fpn_blocks_cost_sums_levels_coarse_to_fine():
    per_level = cost.fpn_blocks_cost(800, 1088, block_levels=(5, 4, 3))
    assert cost.level_shape(800, 1088, 3) == (100, 136)
    assert per_level[5] == cost.block_cost(25, 34, 256)
    total = sum(per_level.values(), cost.ZERO)
    assert total.params == 3 * 131_712
    assert total.macs == sum(c.macs for c in per_level.values())
    assert total.peak_floats == max(c.peak_floats for c in per_level.values())


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: cost.block_cost(0, 4, 8), "`height`"),
        (lambda: cost.block_cost(4, 4, 8, kind="nl"), "`kind`"),
        (lambda: cost.block_cost(4, 4, 8, 0), "`inter_channels`"),
        (lambda: cost.fpn_blocks_cost(800, 1088, block_levels=()), "`block_levels`"),
        (lambda: cost.fpn_blocks_cost(800, 1088, block_levels=(5, -1)), "`block_levels`"),
    ],
)
def test_bad_input_names_the_argument(call, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        call()
