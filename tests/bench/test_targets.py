"""The bench's targets computed from results (enl_experiments.bench.targets)."""

import pytest
from results_factory import detector_variants, scaling_section

from enl_experiments.bench import targets


def _by_name(found, fragment):
    matches = [t for t in found if fragment in t.name]
    assert matches, f"no target named like {fragment!r}"
    return matches


def test_efficiency_met_and_not_met():
    met = targets.scaling_targets("torch", scaling_section(enl_gflops=90, sgemm_gflops=100))
    for target in _by_name(met, "efficiency"):
        assert target.status == "met", target
    missed = targets.scaling_targets("torch", scaling_section(enl_gflops=50, sgemm_gflops=100))
    fwd = _by_name(missed, "ENL fwd efficiency")[0]
    assert fwd.status == "not met" and "50%" in fwd.measured


def test_efficiency_uses_the_paired_reference():
    section = scaling_section(enl_gflops=90, sgemm_gflops=100)
    entry = next(e for e in section["entries"] if e["implementation"] == "enl")
    assert targets.efficiency(entry, section["sgemm"]) == pytest.approx(0.9)
    del entry["sgemm_paired"]
    section["sgemm"]["by_side"][str(entry["side"])][entry["mode"]]["gflops"] = 180.0
    assert targets.efficiency(entry, section["sgemm"]) == pytest.approx(0.5)


def test_slope_of_a_linear_block_is_met():
    found = targets.scaling_targets("torch", scaling_section())
    for target in _by_name(found, "slope"):
        assert target.status == "met" and target.measured.startswith("1.00")


def test_memory_ratio_reported_with_the_number():
    found = targets.scaling_targets("torch", scaling_section())
    target = _by_name(found, "fwd peak memory")[0]
    assert target.status == "met" and "3.0 x" in target.measured


def test_speedup_met_only_when_every_competitor_is_slower_enough():
    fast = targets.scaling_targets("torch", scaling_section(competitor_factor=40))
    assert all(t.status == "met" for t in _by_name(fast, "speed-up"))
    slow = targets.scaling_targets("torch", scaling_section(competitor_factor=10))
    target = _by_name(slow, "fwd speed-up")[0]
    assert target.status == "not met" and "sdpa 10.0x" in target.measured


def test_infeasible_nl_is_what_the_target_wants():
    ok = targets.scaling_targets("torch", scaling_section(nl_status_65536="infeasible"))
    assert _by_name(ok, "infeasible")[0].status == "met"
    ran = targets.scaling_targets("torch", scaling_section(nl_status_65536="skipped"))
    assert _by_name(ran, "infeasible")[0].status == "not met"


def test_missing_entries_are_not_measured_never_dropped():
    section = scaling_section()
    section["entries"] = [e for e in section["entries"] if e["n"] < 16384]
    found = targets.scaling_targets("torch", section)
    for fragment in ("efficiency", "peak memory", "speed-up", "infeasible", "slope"):
        assert all(t.status == "not measured" for t in _by_name(found, fragment))


def test_detector_targets():
    good = targets.detector_targets(detector_variants(enl_flops_ratio=1.04,
                                                      enl_params_delta=300_000))
    assert [t.status for t in good] == ["met", "met", "met"]
    bad = targets.detector_targets(detector_variants(enl_flops_ratio=1.08,
                                                     enl_params_delta=900_000,
                                                     agreement=0.05))
    assert [t.status for t in bad] == ["not met", "not met", "not met"]
    assert "+5.00%" in bad[2].measured


def test_all_targets_lists_sections_that_did_not_run():
    found = targets.all_targets({"sections": {"torch": scaling_section()}})
    names = [t.name for t in found]
    assert any(n.startswith("[keras]") for n in names)
    assert any(n.startswith("[detectors]") for n in names)
    assert {t.status for t in found if not t.name.startswith("[torch]")} == {"not measured"}


def test_speedup_with_a_competitor_that_did_not_run_is_not_measured():
    section = scaling_section(competitor_factor=40)
    for entry in section["entries"]:
        if entry["implementation"] == "sdpa" and entry["n"] == 16384:
            entry.update(status="skipped", reason="predicted 300 s per call")
    target = _by_name(targets.scaling_targets("torch", section), "fwd speed-up")[0]
    assert target.status == "not measured" and "300 s" in target.measured
