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


def test_efficiency_holds_from_4096_on():
    section = scaling_section(enl_gflops=90, sgemm_gflops=100)
    for e in section["entries"]:
        if e["implementation"] == "enl" and e["n"] == 4096:
            e["sgemm_paired"]["gflops"] = 150.0  # 60% at N = 4,096 only
    target = _by_name(targets.scaling_targets("torch", section), "ENL fwd efficiency")[0]
    assert target.status == "not met" and "N=4,096: 60%" in target.measured


@pytest.mark.parametrize("ratio, status", [(1.05, "met"), (1.2, "not met")])
def test_memory_against_the_live_tensor_floor(ratio, status):
    found = targets.scaling_targets("torch", scaling_section(enl_floor_ratio=ratio))
    for target in _by_name(found, "live-tensor floor"):
        assert target.status == status and f"max {ratio:.2f}" in target.measured, target


def test_the_floor_is_the_accounting_of_the_report():
    """C = 256, C' = 128: 3.0x the input forward, 5.5x forward + backward."""
    section = scaling_section()
    for e in section["entries"]:
        if e["implementation"] == "enl":
            expected = {"forward": 3.0, "forward_backward": 5.5}[e["mode"]]
            assert e["floor_bytes"] == pytest.approx(expected * e["input_bytes"])


def test_a_peak_below_its_lower_bound_fails_the_check():
    section = scaling_section()
    assert _by_name(targets.scaling_targets("torch", section), "lower bound")[0].status == "met"
    assert targets.below_lower_bound(section) == []
    nl = next(e for e in section["entries"] if e["implementation"] == "nl_embedded_gaussian"
              and e["n"] == 16384 and e["mode"] == "forward")
    nl["peak_bytes"] = nl["lower_bound_bytes"] - 1  # the 1 GiB affinity not seen
    (below,) = targets.below_lower_bound(section)
    assert "nl_embedded_gaussian fwd N=16,384" in below
    target = _by_name(targets.scaling_targets("torch", section), "lower bound")[0]
    assert target.status == "not met" and below in target.measured


def test_lower_bound_holds_the_nl_affinity_and_enl_y():
    section = scaling_section()
    by_key = {(e["implementation"], e["n"], e["mode"]): e for e in section["entries"]}
    n = 16384
    assert by_key["nl_dot_product", n, "forward"]["lower_bound_bytes"] == 4 * (n * n + 256 * n)
    assert by_key["enl", n, "forward"]["lower_bound_bytes"] == 4 * n * (256 + 128)
    assert by_key["enl", n, "forward_backward"]["lower_bound_bytes"] == 4 * n * 2 * 256


def test_speedup_rows_are_reported_with_the_mac_ratio():
    found = targets.scaling_targets("torch", scaling_section(competitor_factor=10))
    rows = _by_name(found, "speed-up")
    assert {t.name.split("N = ")[1] for t in rows} == {"4,096", "16,384"}
    assert all(t.status == "reported" for t in rows)
    target = _by_name(found, "fwd speed-up over NL and attention, N = 16,384")[0]
    assert "sdpa 10.0x (MAC ratio 25.2x)" in target.measured, target.measured
    assert "nl_dot_product 10.0x (MAC ratio 26.0x)" in target.measured


def test_infeasible_nl_is_what_the_target_wants():
    ok = targets.scaling_targets("torch", scaling_section(nl_status_65536="infeasible"))
    assert _by_name(ok, "infeasible")[0].status == "met"
    ran = targets.scaling_targets("torch", scaling_section(nl_status_65536="skipped"))
    assert _by_name(ran, "infeasible")[0].status == "not met"


def test_missing_entries_are_not_measured_never_dropped():
    section = scaling_section()
    section["entries"] = [e for e in section["entries"] if e["n"] < 4096]
    found = targets.scaling_targets("torch", section)
    for fragment in ("efficiency", "peak memory", "speed-up", "infeasible", "slope"):
        assert all(t.status == "not measured" for t in _by_name(found, fragment))


def test_detector_targets():
    good = targets.detector_targets(detector_variants(enl_flops_ratio=1.04,
                                                      enl_params_delta=300_000))
    assert [t.status for t in good] == ["met", "met", "met", "met"]
    bad = targets.detector_targets(detector_variants(enl_flops_ratio=1.08,
                                                     enl_params_delta=900_000,
                                                     agreement=0.05))
    assert [t.status for t in bad] == ["not met", "not met", "met", "not met"]
    assert "+5.00%" in bad[3].measured


def test_eval_memory_below_the_blocks_bound_fails():
    """+3NL TD reported at 400 MB while one P3 affinity needs 800 MB: the
    allocator statistic's blind spot, caught."""
    good = detector_variants()
    assert targets.detectors_below_bound(good) == []
    bad = detector_variants(nl_td_memory=400_000_000)
    assert targets.detectors_below_bound(bad) == ["fasterrcnn +3NL, TD"]
    target = _by_name(targets.detector_targets(bad), "eval memory")[0]
    assert target.status == "not met" and "+3NL, TD 381 >= 763 MiB" in target.measured


def test_all_targets_lists_sections_that_did_not_run():
    found = targets.all_targets({"sections": {"torch": scaling_section()}})
    names = [t.name for t in found]
    assert any(n.startswith("[keras]") for n in names)
    assert any(n.startswith("[detectors]") for n in names)
    assert {t.status for t in found if not t.name.startswith("[torch]")} == {"not measured"}


def test_speedup_row_says_why_a_competitor_did_not_run():
    section = scaling_section(competitor_factor=40)
    for entry in section["entries"]:
        if entry["implementation"] == "sdpa" and entry["n"] == 16384:
            entry.update(status="skipped", reason="predicted 300 s per call")
    target = _by_name(targets.scaling_targets("torch", section),
                      "fwd speed-up over NL and attention, N = 16,384")[0]
    assert target.status == "reported" and "sdpa: skipped (predicted 300 s" in target.measured
