"""The flip-rate computation on hand-made detections whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from enl_experiments.main import flip_rate

BOX_A, BOX_B, BOX_C = [10.0, 10.0, 8.0, 8.0], [100.0, 20.0, 8.0, 8.0], [300.0, 5.0, 8.0, 8.0]
CONTEXT = {"images": [
    {"image_id": 1, "objects": [
        # became annotated (+1), at 40 px
        {"uid": 3, "category_id": 2, "bbox": BOX_A, "distance": 40.0,
         "label_original": False, "label_twin": True,
         "rule_original": False, "rule_twin": True},
        # stopped being annotated (-1), at 250 px
        {"uid": 4, "category_id": 3, "bbox": BOX_B, "distance": 250.0,
         "label_original": True, "label_twin": False,
         "rule_original": True, "rule_twin": False},
        # unchanged label: never a record
        {"uid": 5, "category_id": 2, "bbox": BOX_C, "distance": 90.0,
         "label_original": True, "label_twin": True,
         "rule_original": True, "rule_twin": True}]},
    {"image_id": 2, "objects": [
        # became annotated, at 400 px, but the model's score stays 0
        {"uid": 1, "category_id": 2, "bbox": BOX_A, "distance": 400.0,
         "label_original": True, "label_twin": True,  # control split: coin unchanged
         "rule_original": False, "rule_twin": True}]},
]}


def _det(image_id, category_id, box, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": box, "score": score}


SCENE = [_det(1, 2, [10.5, 10.0, 8.0, 8.0], 0.2),  # object 3: IoU 0.89 with BOX_A
         _det(1, 2, BOX_A, 0.1),  # a weaker duplicate: the best score counts
         _det(1, 3, BOX_B, 0.9),
         _det(1, 2, BOX_B, 0.95),  # wrong category for object 4: ignored
         _det(1, 2, BOX_C, 0.8)]
TWIN = [_det(1, 2, BOX_A, 0.7),  # object 3 up: flipped
        _det(1, 3, [104.0, 20.0, 8.0, 8.0], 0.95)]  # object 4 up, IoU 0.33: score 0, down


def test_object_score_takes_the_best_overlapping_detection_of_the_category():
    assert flip_rate.object_score(SCENE, 2, BOX_A) == 0.2
    assert flip_rate.object_score(SCENE, 3, BOX_B) == 0.9
    assert flip_rate.object_score(TWIN, 3, BOX_B) == 0.0  # IoU 1/3 < 0.5
    assert flip_rate.object_score(TWIN, 3, BOX_B, iou_threshold=0.3) == 0.95
    assert flip_rate.object_score([], 2, BOX_A) == 0.0


def test_box_iou_known_values():
    assert flip_rate.box_iou(BOX_A, BOX_A) == 1.0
    assert flip_rate.box_iou(BOX_A, BOX_B) == 0.0
    assert flip_rate.box_iou([0, 0, 2, 2], [1, 0, 2, 2]) == pytest.approx(1 / 3)


def test_flip_records_and_rate_on_known_answers():
    records = flip_rate.flip_records(CONTEXT, SCENE, TWIN)
    assert [(r["uid"], r["direction"], r["score_original"], r["score_twin"], r["flipped"],
             r["against"]) for r in records] == [(3, 1, 0.2, 0.7, True, False),
                                                 (4, -1, 0.9, 0.0, True, False)]
    assert flip_rate.flip_rate(records) == {"rate": 1.0, "n": 2, "flipped": 2,
                                            "against": 0, "against_rate": 0.0}
    # The same scores read the other way round: both moved against the new label.
    swapped = flip_rate.flip_records(CONTEXT, TWIN, SCENE)
    assert flip_rate.flip_rate(swapped) == {"rate": 0.0, "n": 2, "flipped": 0,
                                            "against": 2, "against_rate": 1.0}


def test_a_change_below_the_margin_is_no_flip():
    twin = [_det(1, 2, BOX_A, 0.23), _det(1, 3, BOX_B, 0.88)]  # +0.03 and -0.02
    records = flip_rate.flip_records(CONTEXT, SCENE, twin)
    assert [r["flipped"] for r in records] == [False, False]
    loose = flip_rate.flip_records(CONTEXT, SCENE, twin, min_change=0.0)
    assert [r["flipped"] for r in loose] == [True, True]
    # The margin holds the other way too: small moves against the label are not counted.
    backwards = flip_rate.flip_records(CONTEXT, twin, SCENE)
    assert [(r["flipped"], r["against"]) for r in backwards] == [(False, False)] * 2
    loose = flip_rate.flip_records(CONTEXT, twin, SCENE, min_change=0.0)
    assert [(r["flipped"], r["against"]) for r in loose] == [(False, True)] * 2


def test_rule_labels_count_the_control_objects_and_zero_scores_do_not_flip():
    records = flip_rate.flip_records(CONTEXT, SCENE, TWIN, labels="rule")
    assert [r["uid"] for r in records] == [3, 4, 1]
    assert records[-1]["score_original"] == records[-1]["score_twin"] == 0.0
    assert not records[-1]["flipped"] and not records[-1]["against"]
    assert flip_rate.flip_rate(records)["rate"] == pytest.approx(2 / 3)
    assert flip_rate.per_category(records, {2: "swimmer", 3: "buoy"}) == {
        "swimmer": {"rate": 0.5, "n": 2, "flipped": 1, "against": 0, "against_rate": 0.0},
        "buoy": {"rate": 1.0, "n": 1, "flipped": 1, "against": 0, "against_rate": 0.0}}


def test_by_distance_bins_the_records():
    records = flip_rate.flip_records(CONTEXT, SCENE, TWIN, labels="rule")
    bins = flip_rate.by_distance(records, [0, 100, 300, 400])
    assert [(b["n"], b["flipped"], b["rate"]) for b in bins] == [(1, 1, 1.0), (1, 1, 1.0),
                                                                 (1, 0, 0.0)]
    empty = flip_rate.by_distance([], [0, 10])
    assert empty == [{"low": 0.0, "high": 10.0, "rate": None, "n": 0, "flipped": 0,
                      "against": 0, "against_rate": None}]


def test_jitter_gives_equal_flip_and_wrong_way_rates():
    """Scores that move at random with the twin's pixels, whatever the label
    does: about as many flips as wrong-way moves, so the net flip rate is
    near 0 although the flip rate alone is far above it."""
    rng = np.random.default_rng(0)
    images, scene, twin = [], [], []
    for image_id in range(1, 2001):
        up = bool(rng.random() < 0.5)
        images.append({"image_id": image_id, "objects": [
            {"uid": 1, "category_id": 2, "bbox": BOX_A, "distance": 100.0,
             "label_original": not up, "label_twin": up,
             "rule_original": not up, "rule_twin": up}]})
        score = float(rng.uniform(0.3, 0.7))
        scene.append(_det(image_id, 2, BOX_A, score))
        twin.append(_det(image_id, 2, BOX_A, score + float(rng.normal(0.0, 0.1))))
    found = flip_rate.flip_rate(flip_rate.flip_records({"images": images}, scene, twin))
    assert found["rate"] > 0.25 and found["against_rate"] > 0.25
    assert abs(found["rate"] - found["against_rate"]) < 0.05


@pytest.mark.parametrize(("call", "name"), [
    (lambda: flip_rate.flip_records(CONTEXT, [], [], labels="truth"), "labels"),
    (lambda: flip_rate.flip_records(CONTEXT, [], [], iou_threshold=0.0), "iou_threshold"),
    (lambda: flip_rate.flip_records(CONTEXT, [], [], min_change=-0.1), "min_change"),
    (lambda: flip_rate.by_distance([], [5, 5]), "edges"),
    (lambda: flip_rate.distance_edges(512, 0), "count"),
])
def test_bad_arguments_are_named(call, name):
    with pytest.raises(ValueError, match=f"`{name}`.*received"):
        call()


# What context is worth on the scenes: objects with known labels, hand-made detections.
LOOK_A, LOOK_B = [200.0, 30.0, 8.0, 8.0], [400.0, 30.0, 8.0, 8.0]
OBJECTS = {1: [
    {"uid": 3, "category_id": 2, "bbox": BOX_A, "label": True, "rule": True},
    {"uid": 4, "category_id": 2, "bbox": LOOK_A, "label": False, "rule": False},
    {"uid": 5, "category_id": 3, "bbox": BOX_B, "label": True, "rule": True},
    {"uid": 6, "category_id": 3, "bbox": LOOK_B, "label": False, "rule": True}]}
WORTH_DETECTIONS = [_det(1, 2, BOX_A, 0.9), _det(1, 2, LOOK_A, 0.3),  # swimmer: right order
                    _det(1, 3, BOX_B, 0.2), _det(1, 3, LOOK_B, 0.6),  # buoy: wrong order
                    _det(1, 1, [0.0, 0.0, 30.0, 60.0], 0.99),  # a person: kept
                    _det(1, 2, LOOK_B, 0.7),  # swimmer on a square: no swimmer there, kept
                    _det(1, 3, [450.0, 40.0, 8.0, 8.0], 0.5)]  # a box on nothing: kept


def test_score_auc_on_known_orders_and_ties():
    auc = flip_rate.score_auc(OBJECTS, WORTH_DETECTIONS)
    assert auc == {2: {"auc": 1.0, "annotated": 1, "lookalike": 1},
                   3: {"auc": 0.0, "annotated": 1, "lookalike": 1}}
    # Against the rule both squares are buoys: no look-alike, no AUC.
    assert flip_rate.score_auc(OBJECTS, WORTH_DETECTIONS, labels="rule")[3]["auc"] is None
    # Nothing detected: every score is 0, a tie, AUC one half.
    assert flip_rate.score_auc(OBJECTS, [])[2]["auc"] == 0.5


def test_perfect_context_drops_only_detections_of_look_alikes():
    kept = flip_rate.perfect_context(OBJECTS, WORTH_DETECTIONS)
    assert kept == [d for d in WORTH_DETECTIONS
                    if not (d["bbox"] in (LOOK_A, LOOK_B) and d["category_id"] in (2, 3)
                            and d["score"] in (0.3, 0.6))]
    assert len(kept) == len(WORTH_DETECTIONS) - 2


def test_context_blind_detections_box_every_object_exactly():
    first = flip_rate.context_blind_detections(OBJECTS, np.random.default_rng(0))
    again = flip_rate.context_blind_detections(OBJECTS, np.random.default_rng(0))
    assert first == again
    assert [(d["category_id"], d["bbox"]) for d in first] == [
        (o["category_id"], o["bbox"]) for o in OBJECTS[1]]
    assert all(0.0 <= d["score"] < 1.0 for d in first)


def test_worth_arguments_are_named():
    with pytest.raises(ValueError, match="labels"):
        flip_rate.score_auc(OBJECTS, [], labels="true")


# The AUC by the distance to the deciding object: three swimmers the rule annotates
# (deciders at 30, 60 and 260 px) against two look-alikes.
BOX_D, BOX_E, LOOK_C = [40.0, 30.0, 8.0, 8.0], [60.0, 30.0, 8.0, 8.0], [500.0, 30.0, 8.0, 8.0]
NEAR_FAR = {1: [
    {"uid": 1, "category_id": 2, "bbox": BOX_A, "rule": True, "decider_distance": 30.0},
    {"uid": 2, "category_id": 2, "bbox": BOX_D, "rule": True, "decider_distance": 60.0},
    {"uid": 3, "category_id": 2, "bbox": BOX_E, "rule": True, "decider_distance": 260.0},
    {"uid": 4, "category_id": 2, "bbox": LOOK_A, "rule": False, "decider_distance": None},
    {"uid": 5, "category_id": 2, "bbox": LOOK_C, "rule": False, "decider_distance": None}]}
# The near swimmers outscore both look-alikes; the far one scores between them.
NEAR_FAR_DETECTIONS = [_det(1, 2, BOX_A, 0.9), _det(1, 2, BOX_D, 0.8), _det(1, 2, BOX_E, 0.4),
                       _det(1, 2, LOOK_A, 0.5), _det(1, 2, LOOK_C, 0.3)]


def test_auc_by_distance_rises_where_the_model_sees_the_decider():
    found = flip_rate.auc_by_distance(NEAR_FAR, NEAR_FAR_DETECTIONS, [0, 128, 256, 512])
    assert found == {2: [
        {"low": 0.0, "high": 128.0, "auc": 1.0, "annotated": 2, "lookalike": 2},
        {"low": 128.0, "high": 256.0, "auc": None, "annotated": 0, "lookalike": 2},
        {"low": 256.0, "high": 512.0, "auc": 0.5, "annotated": 1, "lookalike": 2}]}
    # One bin holds them all: the overall AUC against the rule (5 of 6 pairs in order).
    whole = flip_rate.auc_by_distance(NEAR_FAR, NEAR_FAR_DETECTIONS, [0, 512])[2][0]["auc"]
    assert whole == flip_rate.score_auc(NEAR_FAR, NEAR_FAR_DETECTIONS, labels="rule")[2]["auc"]
    assert whole == pytest.approx(5 / 6)
    # The last bin is closed: an object at its upper edge counts.
    assert flip_rate.auc_by_distance(NEAR_FAR, NEAR_FAR_DETECTIONS,
                                     [0, 30])[2][0]["annotated"] == 1


def test_auc_by_distance_names_bad_arguments():
    with pytest.raises(ValueError, match="edges"):
        flip_rate.auc_by_distance(NEAR_FAR, [], [0, 0])
    with pytest.raises(ValueError, match="edges"):
        flip_rate.auc_by_distance(NEAR_FAR, [], [10])
    broken = {1: [dict(NEAR_FAR[1][0], decider_distance=None)]}
    with pytest.raises(ValueError, match="decider_distance"):
        flip_rate.auc_by_distance(broken, [], [0, 512])


def _seed_flips(pairs):
    """One seed's ``flip`` entry from (flipped, against) counts of 10 objects per bin."""
    def entry(flipped, against):
        return {"rate": flipped / 10, "n": 10, "flipped": flipped, "against": against,
                "against_rate": against / 10}
    bins = [{"low": 128.0 * i, "high": 128.0 * (i + 1), **entry(*pair)}
            for i, pair in enumerate(pairs)]
    flipped, against = (sum(p[k] for p in pairs) for k in (0, 1))
    total = {"rate": flipped / (10 * len(pairs)), "n": 10 * len(pairs), "flipped": flipped,
             "against": against, "against_rate": against / (10 * len(pairs))}
    return {"flip": {"all": total, "per_category": {"swimmer": total}, "by_distance": bins}}


def test_aggregated_flips_carry_the_wrong_way_and_net_rates():
    from enl_experiments.main import context_eval

    per_seed = [_seed_flips([(3, 1), (2, 2)]), _seed_flips([(5, 1), (0, 2)])]
    flips = context_eval.aggregate_flips(per_seed)
    assert flips["all"]["values"] == [25.0, 25.0]
    assert flips["against"]["values"] == [15.0, 15.0]
    assert flips["net"]["values"] == [10.0, 10.0]
    near, far = flips["by_distance"]
    assert near["values"] == [30.0, 50.0] and near["against"]["values"] == [10.0, 10.0]
    assert near["net"]["values"] == [20.0, 40.0] and far["net"]["values"] == [0.0, -20.0]
    assert near["n"] == 20
    table = context_eval.flip_table({"baseline": flips}, {"baseline": "baseline"})
    assert "flip rate / wrong-way rate (%)" in table
    assert "| distance 0-128 px (n=20) | 40.0 ± 14.1 / 10.0 ± 0.0 |" in table
    assert "| net flip rate, 128-256 px | -10.0 ± 14.1 |" in table
    curves = context_eval.reach_curves({"baseline": flips}, {"baseline": "baseline"})
    assert curves["baseline"]["against"] == [10.0, 20.0]


def test_flips_written_before_the_wrong_way_rate_still_aggregate():
    from enl_experiments.main import context_eval

    old = _seed_flips([(3, 1)])
    for entry in [old["flip"]["all"], *old["flip"]["by_distance"]]:
        del entry["against"], entry["against_rate"]
    flips = context_eval.aggregate_flips([old])
    assert flips["all"]["mean"] == 30.0 and flips["against"]["mean"] is None
    table = context_eval.flip_table({"baseline": flips}, {"baseline": "baseline"})
    assert table.splitlines()[0] == "| flip rate (%) | baseline |"
    assert "net" not in table and "/" not in table


def test_the_reach_axis_fits_the_rates_drawn():
    from enl_experiments.main import figures

    def curve(rate, std, against=None):
        return {"distance": [64.0, 192.0], "rate": rate, "std": std, "n": [10, 10],
                "against": against}

    # A few percent: the axis shrinks to 10% so they can be read.
    assert figures.rate_axis_top({"a": curve([0.3, None], [0.6, None])}) == 10.0
    # The highest rate plus its spread, or a wrong-way rate, sets the top (with a margin).
    assert figures.rate_axis_top({"a": curve([14.9, 0.0], [2.8, 0.0])}) == pytest.approx(
        1.15 * 17.7)
    assert figures.rate_axis_top({"a": curve([1.0, 2.0], [None, None], [None, 40.0]),
                                  "b": curve([5.0, 0.0], [1.0, 0.0])}) == pytest.approx(46.0)
    # 100% still fits.
    assert figures.rate_axis_top({"a": curve([100.0, 90.0], [10.0, 0.0])}) == 102.0
