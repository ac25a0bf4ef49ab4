"""enl_core.fpn: the level rule both decoders apply and the top-down reference."""

from __future__ import annotations

import re

import numpy as np
import pytest

from enl_core import fpn


def test_block_levels_come_back_coarse_to_fine_as_ints():
    assert fpn.check_block_levels([3, 5, 4]) == (5, 4, 3)
    assert fpn.check_block_levels((np.int64(4), 2), stream_levels=range(2, 6)) == (4, 2)
    assert fpn.check_levels("levels", [2, 3]) == (2, 3)  # order kept


@pytest.mark.parametrize(("block_levels", "stream", "error", "pattern"), [
    ((), None, ValueError, r"`block_levels` must name at least one FPN level, received \(\)"),
    ("543", None, TypeError, r"`block_levels` must be a sequence .* received '543'"),
    (5, None, TypeError, r"`block_levels` must be a sequence .* received 5"),
    ((5, 5), None, ValueError, r"`block_levels` must not repeat a level, received \(5, 5\)"),
    ((5, -1), None, ValueError, r"`block_levels` must be non-negative integers"),
    ((5, True), None, ValueError, r"`block_levels` must be non-negative integers"),
    ((5, 4.0), None, ValueError, r"`block_levels` must be non-negative integers"),
    ((6,), range(2, 6), ValueError,
     r"`block_levels` must lie on the top-down stream, levels \(2, 3, 4, 5\).*\(6,\)"),
])
def test_bad_block_levels_name_the_argument_and_value(block_levels, stream, error, pattern):
    with pytest.raises(error, match=pattern):
        fpn.check_block_levels(block_levels, stream)


@pytest.mark.parametrize(("check", "value", "name"), [
    (fpn.check_block, "nonlocal", "block"), (fpn.check_block, None, "block"),
    (fpn.check_block_norm, "group", "block_norm"), (fpn.check_block_norm, ["batch"], "block_norm"),
])
def test_bad_block_or_norm_names_the_argument(check, value, name):
    with pytest.raises(ValueError, match=f"`{name}` must be one of .* received "
                                         f"{re.escape(repr(value))}"):
        check(value)
    assert all(check(good) == good for good in (fpn.BLOCK_TYPES if name == "block"
                                                else fpn.BLOCK_NORMS))


def test_top_down_is_the_coarse_to_fine_recursion_written_out():
    rng = np.random.default_rng(0)
    laterals = {level: rng.normal(size=(2, 32 >> level, 64 >> level, 3)) for level in (2, 3, 4, 5)}
    blocks = {5: np.tanh, 3: lambda x: 2.0 * x}
    stream = fpn.top_down(laterals, blocks)

    def up(x):
        return np.kron(x, np.ones((1, 2, 2, 1)))  # nearest 2x, written another way

    p5 = np.tanh(laterals[5])
    p4 = laterals[4] + up(p5)
    p3 = 2.0 * (laterals[3] + up(p4))
    p2 = laterals[2] + up(p3)
    for level, expected in ((5, p5), (4, p4), (3, p3), (2, p2)):
        np.testing.assert_array_equal(stream[level], expected)


def test_top_down_upsampling_crops_to_the_finer_grid_and_is_pluggable():
    laterals = {4: np.ones((1, 3, 5, 1)), 5: np.full((1, 2, 3, 1), 2.0)}
    assert fpn.top_down(laterals, {})[4].shape == (1, 3, 5, 1)
    calls = []
    fpn.top_down(laterals, {}, upsample=lambda coarser, like: calls.append(
        (coarser.shape, like.shape)) or like)
    assert calls == [((1, 2, 3, 1), (1, 3, 5, 1))]


def test_top_down_rejects_a_block_off_the_stream():
    with pytest.raises(ValueError, match=r"`blocks` has levels \[6\]"):
        fpn.top_down({5: np.ones((1, 1, 1, 1))}, {6: np.tanh})
