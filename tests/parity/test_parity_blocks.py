"""The parity matrix: every framework's ENL / NonLocal against the float64
reference and against each other, on Hypothesis-drawn cases (README, "Cross-framework parity").

For each case (grid 1..40 x 1..40, C 1..64, C', dct_size often larger than
the grid, position term on/off, d none/fixed/learnable, both NonLocal modes,
scale, sub-sampling) and each implementation in its own worker:

* ``z`` equals the float64 ``enl_core`` reference within the float32
  tolerance of ``enl_core.testing``;
* the gradient of ``sum(z * r)`` w.r.t. x and every weight, projected on
  random directions, equals the reference's central differences (an
  independent check: no framework's autodiff is trusted as the reference);
* the full gradients (and outputs) of all frameworks agree with each other.
"""

from __future__ import annotations

import itertools

import numpy as np
import parity_cases
import parity_protocol as protocol
import pytest
from parity_checks import assert_gradients_close, projected_gradients

from enl_core.testing import assert_close

CASES = dict(parity_cases.block_cases())
CASE_IDS = list(CASES)


@pytest.mark.parametrize("implementation", protocol.FRAMEWORKS)
@pytest.mark.parametrize("case", CASE_IDS)
def test_output_matches_float64_reference(block_results, implementation, case):
    result = block_results.get(implementation, case)
    reference = block_results.get("core", case)
    assert result["z"].dtype == np.dtype(protocol.DTYPE)
    assert_close(result["z"], reference["z"], protocol.DTYPE,
                 err_msg=f"{implementation} z, {block_results.describe[case]}")


@pytest.mark.parametrize("implementation", protocol.FRAMEWORKS)
@pytest.mark.parametrize("case", CASE_IDS)
def test_gradients_match_float64_central_differences(block_results, implementation, case):
    result = block_results.get(implementation, case)
    reference = block_results.get("core", case)
    _, arrays = protocol.read_npz(block_results.inputs[case])
    names = protocol.gradient_names(CASES[case])
    projected = projected_gradients(result, arrays, names, implementation)
    expected = {name: reference[f"fd.{name}"] for name in names}
    assert_gradients_close(projected, expected, f"{implementation} gradients projected on "
                           f"random directions vs float64 central differences, "
                           f"{block_results.describe[case]}")


@pytest.mark.parametrize("case", CASE_IDS)
def test_frameworks_agree_with_each_other(block_results, case):
    results = {name: block_results.get(name, case) for name in protocol.FRAMEWORKS}
    names = [f"grad.{name}" for name in protocol.gradient_names(CASES[case])]
    for (name_a, a), (name_b, b) in itertools.combinations(results.items(), 2):
        context = f"{name_a} vs {name_b}, {block_results.describe[case]}"
        assert_close(a["z"], b["z"], protocol.DTYPE, err_msg=f"z, {context}")
        assert_gradients_close({n: a[n] for n in names}, {n: b[n] for n in names}, context)
