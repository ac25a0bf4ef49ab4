"""Hypothesis-drawn block cases of the parity matrix.

The cases are drawn once per test session, in the driver, under the active
Hypothesis profile (root ``conftest.py``: "ci", derandomized, by default;
``HYPOTHESIS_PROFILE=dev`` draws many more), then run in batch by every
worker. Each case is a small JSON-able spec; its arrays are derived from its
seed (:func:`parity_protocol.case_arrays`).
"""

from __future__ import annotations

import functools
import json

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

sides = st.integers(min_value=1, max_value=40)
seeds = st.integers(min_value=0, max_value=2**32 - 1)
# Up to 12 frequencies: the grids go down to 1 x 1, so dct_size is often
# larger than the grid (the clamping of docs/ENL-SPEC.md).
dct_sizes = st.lists(st.integers(min_value=1, max_value=12), min_size=2, max_size=2)


@st.composite
def enl_specs(draw) -> dict:
    """An ENL block: any grid and width, position term on/off, d none/fixed/learnable."""
    position = draw(st.booleans())
    return {
        "block": "enl", "batch": draw(st.integers(1, 2)),
        "height": draw(sides), "width": draw(sides),
        "channels": draw(st.integers(1, 64)), "inter_channels": draw(st.integers(1, 32)),
        "position_encoding": position, "dct_size": draw(dct_sizes),
        "dct_weights": draw(st.sampled_from(["none", "fixed", "learnable"])) if position
        else "none",
        "seed": draw(seeds),
    }


@st.composite
def nonlocal_specs(draw) -> dict:
    """A NonLocal block: both modes, scale, sub-sampling, the explicit L."""
    height, width = draw(sides), draw(sides)
    mode = draw(st.sampled_from(["dot_product", "embedded_gaussian"]))
    sub_sample = min(height, width) >= 2 and draw(st.booleans())
    position = mode == "dot_product" and not sub_sample and draw(st.booleans())
    return {
        "block": "nl", "batch": draw(st.integers(1, 2)), "height": height, "width": width,
        "channels": draw(st.integers(1, 64)), "inter_channels": draw(st.integers(1, 32)),
        "mode": mode, "scale": draw(st.booleans()), "sub_sample": sub_sample,
        "position_encoding": position, "dct_size": draw(dct_sizes), "seed": draw(seeds),
    }


@st.composite
def top_down_specs(draw) -> dict:
    """An ENL-FPN top-down stream over levels 2..5 with blocks on any levels.

    P5 is base_height x base_width (1..5), so P2 reaches 40 x 40.
    """
    block = draw(st.sampled_from(["enl", "nl"]))
    levels = draw(st.lists(st.sampled_from([5, 4, 3, 2]), min_size=1, max_size=4, unique=True))
    return {
        "block": block, "block_levels": sorted(levels, reverse=True),
        "batch": draw(st.integers(1, 2)), "base_height": draw(st.integers(1, 5)),
        "base_width": draw(st.integers(1, 5)), "channels": draw(st.integers(1, 32)),
        "inter_channels": draw(st.integers(1, 16)),
        "position_encoding": block == "enl" and draw(st.booleans()),
        "dct_size": draw(dct_sizes), "seed": draw(seeds),
    }


def draw_specs(strategy, fraction: int = 1) -> list[dict]:
    """The examples Hypothesis generates for ``strategy`` under the active
    profile (its ``max_examples`` divided by ``fraction``, at least 3;
    its derandomization), without duplicates."""
    drawn = []
    examples = max(3, settings.default.max_examples // fraction)

    @settings(database=None, phases=[Phase.generate], max_examples=examples)
    @given(strategy)
    def collect(spec):
        drawn.append(spec)

    collect()
    unique = {json.dumps(spec, sort_keys=True): spec for spec in drawn}
    return list(unique.values())


def case_id(index: int, spec: dict) -> str:
    """A readable test id: block, index, B x H x W x C -> C'."""
    return (f"{spec['block']}{index:03d}-{spec['batch']}x{spec['height']}x{spec['width']}"
            f"x{spec['channels']}c{spec['inter_channels']}")


@functools.cache
def block_cases() -> tuple[tuple[str, dict], ...]:
    """(id, spec) of every block case of this session: ENL cases, then NonLocal."""
    cases = []
    for strategy in (enl_specs(), nonlocal_specs()):
        for spec in draw_specs(strategy):
            cases.append((case_id(len(cases), spec), spec))
    return tuple(cases)


@functools.cache
def top_down_cases() -> tuple[tuple[str, dict], ...]:
    """(id, spec) of the session's top-down stream cases. A fifth of the
    profile's examples: each builds a whole Model Garden decoder (seconds)."""
    return tuple((f"fpn{index:02d}-{spec['block']}{''.join(map(str, spec['block_levels']))}"
                  f"-{spec['batch']}x{spec['base_height']}x{spec['base_width']}"
                  f"x{spec['channels']}c{spec['inter_channels']}", spec)
                 for index, spec in enumerate(draw_specs(top_down_specs(), fraction=5)))
