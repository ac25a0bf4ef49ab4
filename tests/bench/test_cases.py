"""Case grid, cost predictions and infeasibility (enl_experiments.bench.cases)."""

import pytest

from enl_core import cost
from enl_experiments.bench import cases
from enl_experiments.bench.config import GIB, BenchConfig

CONFIG = BenchConfig()
LIMIT = 24 * GIB


def _case(implementation, side, mode="forward", flash=False):
    (case,) = [c for c in cases.build_cases("torch", [implementation], CONFIG, flash)
               if c.side == side and c.mode == mode]
    return case


def test_grid_has_every_implementation_side_and_mode():
    grid = cases.build_cases("torch", ["enl", "sdpa"], CONFIG)
    assert len(grid) == 2 * len(CONFIG.sides) * 2
    assert {c.n for c in grid} == {s * s for s in CONFIG.sides}


def test_macs_are_the_cost_model_and_backward_triples_them():
    enl = _case("enl", 128)
    assert enl.macs == cost.block_cost(128, 128, 256, 128, kind="enl").macs
    assert _case("enl", 128, "forward_backward").macs == 3 * enl.macs
    nl = _case("nl_embedded_gaussian", 64)
    assert nl.macs == cost.block_cost(64, 64, 256, 128, kind="nl_embedded_gaussian").macs
    assert _case("sdpa", 64).macs == 2 * 4096 * 4096 * 128


def test_nl_at_65536_is_infeasible_and_enl_is_not():
    nl = cases.classify(_case("nl_dot_product", 256), LIMIT, None, None, 10.0)
    assert nl.status == "infeasible" and "GiB" in nl.reason
    # The N x N affinity alone is 16 GiB (17.2 GB).
    assert nl.predicted_bytes >= 65536**2 * 4
    enl = cases.classify(_case("enl", 256, "forward_backward"), LIMIT, None, None, 10.0)
    assert enl.status == "run"
    assert enl.predicted_bytes < 20 * enl.input_bytes


def test_materialised_attention_is_infeasible_flash_is_not():
    keras_dpa = cases.classify(_case("keras_dpa", 256), LIMIT, None, None, 1e9)
    assert keras_dpa.status == "infeasible"
    flash = cases.classify(_case("sdpa", 256, flash=True), LIMIT, None, None, 1e9)
    assert flash.status == "run"


def test_slow_or_too_large_for_free_memory_is_skipped():
    slow = cases.classify(_case("sdpa", 256, flash=True), LIMIT, None, 100e9, 6.0)
    assert slow.status == "skipped" and "predicted" in slow.reason
    crowded = cases.classify(_case("nl_dot_product", 128), LIMIT, GIB, None, 6.0)
    assert crowded.status == "skipped" and "free" in crowded.reason
    fine = cases.classify(_case("enl", 128), LIMIT, 20 * GIB, 100e9, 6.0)
    assert fine.status == "run"


def test_matmul_shapes_cover_the_cost_model_less_the_position_term():
    n, c, inter = 4096, 256, 128
    shapes = cases.enl_matmul_shapes(n, c, inter)
    macs = sum(a * b * d for a, b, d in shapes)
    block = cost.block_cost(64, 64, c, inter, kind="enl")
    assert macs == block.macs - cost.position_macs(64, 64, inter)
    for shape in shapes:
        backward = cases.backward_shapes(shape)
        assert all(a * b * d == shape[0] * shape[1] * shape[2] for a, b, d in backward)


def test_unknown_implementation_is_named():
    with pytest.raises(ValueError, match="implementations"):
        cases.build_cases("torch", ["flash_enl"], CONFIG)


def test_profiled_grid_is_n_16384_or_the_largest_below():
    from enl_experiments.bench.scaling import profile_side

    assert profile_side((32, 64, 128, 256)) == 128
    assert profile_side((32, 64)) == 64
    assert profile_side((192, 256)) == 192


def test_profiled_grids_add_the_largest():
    from enl_experiments.bench.scaling import profile_sides

    assert profile_sides((32, 64, 128, 256)) == [128, 256]
    assert profile_sides((32, 64, 128)) == [128]
    assert profile_sides((48,)) == [48]


def test_entries_the_targets_need_ignore_the_time_limit():
    slow = _case("nl_embedded_gaussian", 128, "forward_backward")
    assert cases.classify(slow, LIMIT, None, 1e9, 3.0).status == "skipped"
    assert cases.classify(slow, LIMIT, None, 1e9, 3.0, always_run_n=16384).status == "run"
    # Memory still rules.
    huge = _case("nl_embedded_gaussian", 256)
    assert cases.classify(huge, LIMIT, None, 1e9, 3.0, always_run_n=65536).status == "infeasible"


def test_time_prediction_scales_a_measured_smaller_n():
    case = _case("sdpa", 128, "forward_backward", flash=True)
    smaller = _case("sdpa", 64, "forward_backward", flash=True)
    # 4x the positions: 16x the MACs of attention; 2 s at N = 4096 -> 32 s.
    seconds, basis = cases.predicted_seconds(case, 1e12, (smaller.macs, 2.0))
    assert seconds == pytest.approx(32.0) and "smaller N" in basis
    judged = cases.classify(case, LIMIT, None, 1e12, 3.0, always_run_n=16384,
                            measured=(smaller.macs, 2.0), hard_max_call_s=30.0)
    assert judged.status == "skipped" and "32 s" in judged.reason
    quick = cases.classify(case, LIMIT, None, 1e12, 3.0, always_run_n=16384,
                           measured=(smaller.macs, 0.5), hard_max_call_s=30.0)
    assert quick.status == "run"
