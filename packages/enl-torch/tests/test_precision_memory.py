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
from enl_core.testing import max_relative_error

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
