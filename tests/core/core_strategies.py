"""Hypothesis strategies for the enl-core property tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

grid_sides = st.integers(min_value=1, max_value=14)
dct_sides = st.integers(min_value=1, max_value=12)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


@st.composite
def grids(draw, max_side: int = 14):
    """(H, W): includes 1x1 and grids smaller than the DCT size."""
    side = st.integers(min_value=1, max_value=max_side)
    return draw(side), draw(side)


@st.composite
def dct_sizes(draw):
    return draw(dct_sides), draw(dct_sides)


@st.composite
def weights_for(draw, dct_size, binary: bool = False):
    """None (all ones), or a (kH, kW) array of d: in {0, 1} when ``binary``."""
    if draw(st.booleans()):
        return None
    rng = np.random.default_rng(draw(seeds))
    if binary:
        return (rng.random(dct_size) < 0.7).astype(np.float64)
    return rng.uniform(-1.5, 1.5, size=dct_size)


@st.composite
def block_cases(draw, max_side: int = 9):
    """A random block: input x (B, H, W, C), channels, inter channels."""
    height, width = draw(grids(max_side))
    batch = draw(st.integers(1, 2))
    channels = draw(st.integers(1, 6))
    inter = draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(seeds))
    x = rng.normal(size=(batch, height, width, channels))
    return x, channels, inter, draw(seeds)
