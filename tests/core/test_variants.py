"""enl_core.variants: one table of the paper's detector variants."""

from __future__ import annotations

import pytest

from enl_core import variants


def test_every_name_of_a_variant_finds_it():
    for key, variant in variants.VARIANTS.items():
        assert variant.key == key
        for name in (variant.key, variant.label, variant.paper_label):
            assert variants.get_variant(name) is variant
    assert list(variants.VARIANTS) == ["baseline", "1nl_bu", "3enl_td", "3nl_td"]
    assert [v.label for v in variants.VARIANTS.values()] == [
        "baseline", "+1NL BU", "+3ENL TD", "+3NL TD"]


def test_what_each_variant_adds():
    added = {key: (v.bottom_up_nonlocal, v.fpn_block) for key, v in variants.VARIANTS.items()}
    assert added == {"baseline": (False, None), "1nl_bu": (True, None),
                     "3enl_td": (False, "enl"), "3nl_td": (False, "nl")}


@pytest.mark.parametrize(("variant", "detector", "name"), [
    ("baseline", "maskrcnn", "maskrcnn_resnetfpn_coco"),  # Model Garden's own
    ("+3ENL, TD", "maskrcnn", "maskrcnn_resnetfpn_enl_coco"),
    ("1nl_bu", "fasterrcnn", "fasterrcnn_resnetfpn_nlbu_coco"),
    ("+3NL TD", "fasterrcnn", "fasterrcnn_resnetfpn_nltd_coco"),
])
def test_garden_experiment_names(variant, detector, name):
    assert variants.garden_experiment(variant, detector) == name


@pytest.mark.parametrize(("call", "pattern"), [
    (lambda: variants.get_variant("+5ENL"), r"`variant` must be one of .*received '\+5ENL'"),
    (lambda: variants.garden_experiment("3enl_td", "retinanet"),
     r"`detector` must be one of .*received 'retinanet'"),
    (lambda: variants.Variant("x", "x", "x", False, "gc", None), r"`fpn_block`.*'gc'"),
])
def test_bad_names_are_named(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()
