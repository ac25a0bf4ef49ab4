"""ENL at N = 65,536: float32 N-sums under autocast, and no N x N tensor.

Both checks record what every aten op reads and writes (a TorchDispatchMode),
so they see the computation itself, not a cost model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_block_cases import ShapeRecorder, to_nchw, to_nhwc

import enl_core
import enl_torch
from enl_core.testing import assert_close, dtype_name, max_relative_error

SIDE = 256  # N = 65,536


@pytest.fixture(scope="module")
def large_case():
    params = enl_core.init_params(16, 8, seed=0)  # out non-zero: y reaches the output
    x = np.random.default_rng(0).uniform(-1e3, 1e3, size=(1, SIDE, SIDE, 16))
    return x, params, enl_core.enl_block(x, params)


def test_bfloat16_autocast_at_65536_positions(large_case):
    """No inf/NaN and < 1e-2 relative error vs float64 with activations up to 1e3."""
    x, params, expected = large_case
    module = enl_torch.ENL(16, 8)
    module.set_block_weights(params)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        z = module(to_nchw(x, torch.float32))
    assert torch.isfinite(z).all()
    assert max_relative_error(to_nhwc(z), expected) < 1e-2
    # The residual is x itself; judge the block's own contribution too.
    assert max_relative_error(to_nhwc(z) - x, expected - x) < 1e-2


def test_autocast_runs_the_position_sums_in_float32():
    """Under bfloat16 autocast the product that sums over all positions
    (phi g, eq. 6) gets float32 operands while the 1x1 projections run in
    bfloat16. (The bfloat16 test above passes either way on CPU, whose bf16
    GEMM accumulates in float32; this one would fail without the upcast.)"""
    module = enl_torch.ENL(16, 8)
    recorder = ShapeRecorder()
    x = torch.randn(1, 16, 32, 24)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), recorder:
        module(x)
    calls = recorder.calls
    context = [c for c in calls if c.shapes[:2] == [(1, 8, 768), (1, 768, 8)]]
    assert context and all(c.dtypes[:2] == [torch.float32] * 2 for c in context), context
    projections = [c for c in calls if "mm" in c.name and (1, 24, 16) in c.shapes]  # fused GEMM
    assert projections and all(torch.bfloat16 in c.dtypes for c in projections)


def test_bfloat16_module_sums_in_float32(large_case):
    """A module cast to bfloat16 (no autocast) also sums over positions in
    float32, and stays within the bfloat16 tolerance of the reference."""
    x, params, expected = large_case
    module = enl_torch.ENL(16, 8).to(torch.bfloat16)
    module.set_block_weights(params)
    recorder = ShapeRecorder()
    with torch.no_grad(), recorder:
        z = module(to_nchw(x, torch.bfloat16))
    assert z.dtype == torch.bfloat16 and torch.isfinite(z).all()
    n = SIDE * SIDE
    context = [c for c in recorder.calls if c.shapes[:2] == [(1, 8, n), (1, n, 8)]]
    assert context and all(c.dtypes[:2] == [torch.float32] * 2 for c in context), context
    assert max_relative_error(to_nhwc(z), expected) < 2e-2


def _largest_numel(module, x, backward=True) -> tuple[int, str]:
    recorder = ShapeRecorder()
    with recorder:
        z = module(x)
        if backward:
            z.sum().backward()
    return recorder.largest()


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_enl_builds_no_n_by_n_tensor(device):
    """Forward and backward at N = 65,536: the largest tensor any op touches is
    the fused projection, 3 C' x N (B = 1), far below N^2 = 4.3e9."""
    n = SIDE * SIDE
    module = enl_torch.ENL(16, 8, zero_init=False, dct_weights="learnable").to(device)
    x = torch.randn(1, 16, SIDE, SIDE, device=device, requires_grad=True)
    numel, where = _largest_numel(module, x)
    assert numel <= max(16, 3 * 8) * n, where


def test_the_same_check_finds_the_affinity_in_nonlocal():
    """The recorder is not blind: NonLocal's (B, N, N) affinity at N = 65,536
    (on the meta device: shapes without the 16 GiB)."""
    n = SIDE * SIDE
    module = enl_torch.NonLocal(16, inter_channels=8, zero_init=False).to("meta")
    x = torch.randn(1, 16, SIDE, SIDE, device="meta", requires_grad=True)
    numel, where = _largest_numel(module, x)
    assert numel >= n * n, where


# --- the mixed-precision contract ---------------------------------------------------
# float16 and bfloat16, as a module cast to the dtype or under CPU autocast: the
# output is finite and within enl_core.testing's tolerance of the float64
# reference whenever that reference is representable in the dtype.

LOW_PRECISION = [torch.float16, torch.bfloat16]
BLOCK_KINDS = ["enl", "nl_dot_product", "nl_embedded_gaussian"]


def _low_precision_case(kind: str, side: int, input_scale: float, seed: int = 0,
                        sub_sample: bool = False):
    """(module, x NHWC, float64 reference). ENL as in the float16 report: the
    ``out`` kernel scaled by 1e-3 so that a large input still gives an output
    float16 holds, while y = theta^T (phi g) / N (cubic in x) does not. The NL
    reference is built 2,048 query rows at a time (its whole affinity at
    N = 65,536 would be 32 GiB)."""
    params = enl_core.init_params(16, 8, seed=seed)
    weights = params.as_dict()
    weights["out.kernel"] = weights["out.kernel"] * 1e-3
    params = enl_core.BlockParams.from_dict(weights)
    x = np.random.default_rng(seed).normal(size=(1, side, side, 16)) * input_scale
    if kind == "enl":
        module = enl_torch.ENL(16, 8)
        expected = enl_core.enl_block(x, params)
    else:
        mode = kind.removeprefix("nl_")
        module = enl_torch.NonLocal(16, mode=mode, inter_channels=8, sub_sample=sub_sample)
        expected = enl_core.nonlocal_block(x, params, mode=mode, sub_sample=sub_sample,
                                           query_chunk=2048)
    module.set_block_weights(params)
    return module, x, expected


def _run_low_precision(module, x: np.ndarray, dtype: torch.dtype, how: str) -> torch.Tensor:
    with torch.no_grad():
        if how == "module":
            return module.to(dtype)(to_nchw(x, dtype))
        with torch.autocast("cpu", dtype=dtype):
            return module(to_nchw(x, torch.float32))


def _check_contract(kind, dtype, how, side, input_scale, sub_sample=False):
    module, x, expected = _low_precision_case(kind, side, input_scale, sub_sample=sub_sample)
    if np.max(np.abs(expected)) > torch.finfo(dtype).max:
        pytest.skip("the reference output is not representable in this dtype")
    z = _run_low_precision(module, x, dtype, how)
    assert torch.isfinite(z).all(), f"{kind} {dtype} {how}: non-finite output"
    assert_close(to_nhwc(z), expected, dtype_name(dtype), err_msg=f"{kind} {dtype} {how}")


# Input scales: ENL up to x60 (y overflows float16 at x30 unless summed and
# projected in float32); NL at x10 (the softmax logits grow with the square of
# the input and amplify any rounding of theta and phi, so NonLocal projects in
# float32 under reduced precision, as enl_keras.ops does).
SCALES = {"enl": [1.0, 30.0, 60.0], "nl_dot_product": [1.0, 10.0],
          "nl_embedded_gaussian": [1.0, 10.0]}


@pytest.mark.parametrize("how", ["module", "autocast"])
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("kind, input_scale",
                         [(k, s) for k in BLOCK_KINDS for s in SCALES[k]])
def test_low_precision_contract_moderate_n(kind, input_scale, dtype, how):
    """N = 1,024 (32 x 32)."""
    _check_contract(kind, dtype, how, 32, input_scale)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["module", "autocast"])
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("kind, side, sub_sample", [
    ("enl", 256, False),
    ("nl_dot_product", 128, False), ("nl_embedded_gaussian", 128, False),
    ("nl_dot_product", 256, True), ("nl_embedded_gaussian", 256, True)])
def test_low_precision_contract_large_n(kind, side, sub_sample, dtype, how):
    """ENL at N = 65,536; NL at N = 16,384 and, with its keys pooled 2x2
    (N' = 16,384), at N = 65,536. The full NL at 65,536 does not fit this
    machine: its float32 affinity and softmax are 16 GiB each."""
    _check_contract(kind, dtype, how, side, SCALES[kind][-1], sub_sample)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("kind", ["nl_dot_product", "nl_embedded_gaussian"])
def test_nonlocal_under_autocast_is_the_float32_block(kind, dtype):
    """Under autocast NonLocal projects in float32 too (as enl_keras.ops): its
    softmax would turn rounded theta and phi into an error of the affinity, so
    the result is the float32 block's to float32 tolerance, not the dtype's."""
    module, x, _ = _low_precision_case(kind, 16, 10.0)
    with torch.no_grad():
        expected = module(to_nchw(x, torch.float32))
    z = _run_low_precision(module, x, dtype, "autocast")
    assert z.dtype == torch.float32
    assert_close(to_nhwc(z), to_nhwc(expected), "float32", err_msg=f"{kind} {dtype}")
