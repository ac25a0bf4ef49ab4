"""Detector variants and their cost-model predictions (enl_experiments.bench.detectors).

Reads Model Garden's registered experiment configs (imports TensorFlow, never
torch); building and running the detectors is the bench's job, not a test's.
"""

import pytest
from results_factory import detector_variants

from enl_core import cost
from enl_experiments.bench import detectors


def test_experiment_names():
    assert detectors.experiment_name("maskrcnn", "+3ENL, TD") == "maskrcnn_resnetfpn_enl_coco"
    assert detectors.experiment_name("fasterrcnn", "baseline") == "fasterrcnn_resnetfpn_coco"
    with pytest.raises(ValueError, match="variant"):
        detectors.experiment_name("maskrcnn", "+5ENL")


def test_resnet_stage_channels():
    assert [detectors.resnet_stage_channels(level) for level in (2, 3, 4, 5)] == [
        256, 512, 1024, 2048]
    with pytest.raises(ValueError, match="level"):
        detectors.resnet_stage_channels(6)


@pytest.fixture(scope="module")
def exp_factory():
    pytest.importorskip("official")
    registry = pytest.importorskip("enl_keras.garden.registry_imports")
    from official.core import exp_factory

    assert registry is not None
    return exp_factory


def _model(exp_factory, detector, variant):
    return exp_factory.get_exp_config(detectors.experiment_name(detector, variant)).task.model


@pytest.mark.garden
def test_blocks_cost_from_the_registered_configs(exp_factory):
    height, width = 832, 1088
    assert detectors.blocks_cost(_model(exp_factory, "maskrcnn", "baseline"), height,
                                 width)["macs"] == 0
    enl = detectors.blocks_cost(_model(exp_factory, "maskrcnn", "+3ENL, TD"), height, width)
    expected = sum(cost.fpn_blocks_cost(height, width, (5, 4, 3), 256).values(), cost.ZERO)
    assert enl["macs"] == expected.macs and enl["params"] == expected.params
    assert len(enl["blocks"]) == 3
    nl_td = detectors.blocks_cost(_model(exp_factory, "fasterrcnn", "+3NL, TD"), height, width)
    expected = sum(cost.fpn_blocks_cost(height, width, (5, 4, 3), 256,
                                        kind="nl_embedded_gaussian").values(), cost.ZERO)
    assert nl_td["macs"] == expected.macs
    nl_bu = detectors.blocks_cost(_model(exp_factory, "fasterrcnn", "+1NL, BU"), height, width)
    assert nl_bu["macs"] == cost.block_cost(52, 68, 1024, kind="nl_embedded_gaussian").macs
    # The paper's point: the top-down NL costs far more than ENL in the same places.
    assert nl_td["macs"] > 10 * enl["macs"]


def test_compare_adds_deltas_and_agreement():
    rows = detectors.compare(detector_variants(agreement=0.01))
    enl = next(r for r in rows if r["variant"] == "+3ENL, TD")
    assert enl["agreement"] == pytest.approx(0.01)
    assert enl["agrees"] and enl["params_delta"] == 400_000
    baseline = next(r for r in rows if r["variant"] == "baseline")
    assert "agreement" not in baseline and baseline["flops_ratio"] == 1.0


def test_block_live_floats_is_the_affinity_and_the_input():
    """P3 of 832 x 1088 (104 x 136): an NL affinity of N^2 floats (~760 MiB)."""
    n = 104 * 136
    nl = cost.block_cost(104, 136, 256, kind="nl_embedded_gaussian")
    assert detectors.block_live_floats(nl, 256, 832, 1088, 3) == n * n + 256 * n
    enl = cost.block_cost(104, 136, 256)
    assert detectors.block_live_floats(enl, 256, 832, 1088, 3) == 128 * 128 + 256 * n


def test_compare_adds_the_memory_delta_and_the_bound_check():
    rows = detectors.compare(detector_variants(nl_td_memory=700_000_000))
    nl_td = next(r for r in rows if r["variant"] == "+3NL, TD")
    assert nl_td["memory_delta"] == 300_000_000 and nl_td["memory_below_bound"]
    enl = next(r for r in rows if r["variant"] == "+3ENL, TD")
    assert not enl["memory_below_bound"]


def test_compare_keeps_failed_rows():
    variants = detector_variants()
    variants[2] = {"detector": "fasterrcnn", "variant": "+3ENL, TD", "status": "error",
                   "reason": "worker exited with 1"}
    rows = detectors.compare(variants)
    assert len(rows) == 4 and rows[2]["status"] == "error" and "agreement" not in rows[2]
