"""The whole ENL-FPN top-down stream: Model Garden's decoder (tf_keras) vs
torchvision's (enl_torch.detection) vs the float64 reference (README, "Cross-framework parity").

Each decoder is built with the case's blocks (ENL or NL on any subset of
levels 2..5) and identity lateral and output convolutions (and, in Model
Garden, an identity output norm), so both are fed the same lateral features
and their outputs are the top-down stream ``P5 = block_5(lat5)``,
``P_l = block_l(lat_l + up(P_{l+1}))``: the coarse-to-fine wiring is
checked, not only the block. Outputs and the gradients of
``sum_l sum(P_l * r_l)`` w.r.t. every lateral feature and every block weight
agree with the reference (central differences) and with each other.
"""

from __future__ import annotations

import numpy as np
import parity_cases
import parity_protocol as protocol
import pytest
from parity_checks import assert_gradients_close, projected_gradients

from enl_core.testing import assert_close

CASES = dict(parity_cases.top_down_cases())
DECODERS = [name for name in protocol.TOP_DOWN_IMPLEMENTATIONS if name != "core"]


@pytest.mark.parametrize("implementation", DECODERS)
@pytest.mark.parametrize("case", list(CASES))
def test_top_down_stream_matches_float64_reference(top_down_results, implementation, case):
    result = top_down_results.get(implementation, case)
    reference = top_down_results.get("core", case)
    for level in protocol.TOP_DOWN_LEVELS:
        assert_close(result[f"p.{level}"], reference[f"p.{level}"], protocol.DTYPE,
                     err_msg=f"{implementation} P{level}, {top_down_results.describe[case]}")


@pytest.mark.parametrize("implementation", DECODERS)
@pytest.mark.parametrize("case", list(CASES))
def test_top_down_gradients_match_float64_central_differences(top_down_results,
                                                              implementation, case):
    result = top_down_results.get(implementation, case)
    reference = top_down_results.get("core", case)
    _, arrays = protocol.read_npz(top_down_results.inputs[case])
    names = protocol.top_down_gradient_names(CASES[case])
    projected = projected_gradients(result, arrays, names, implementation)
    assert_gradients_close(projected, {name: reference[f"fd.{name}"] for name in names},
                           f"{implementation} top-down gradients vs float64 central "
                           f"differences, {top_down_results.describe[case]}")


@pytest.mark.parametrize("case", list(CASES))
def test_top_down_decoders_agree_with_each_other(top_down_results, case):
    garden, torch = (top_down_results.get(name, case) for name in DECODERS)
    context = f"{' vs '.join(DECODERS)}, {top_down_results.describe[case]}"
    for level in protocol.TOP_DOWN_LEVELS:
        assert_close(garden[f"p.{level}"], torch[f"p.{level}"], protocol.DTYPE,
                     err_msg=f"P{level}, {context}")
    names = [f"grad.{name}" for name in protocol.top_down_gradient_names(CASES[case])]
    assert_gradients_close({n: garden[n] for n in names}, {n: torch[n] for n in names}, context)
    assert np.isfinite(garden["p.2"]).all()
