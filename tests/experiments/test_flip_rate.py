"""The flip-rate computation on hand-made detections whose answer is known."""

from __future__ import annotations

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
    assert [(r["uid"], r["direction"], r["score_original"], r["score_twin"], r["flipped"])
            for r in records] == [(3, 1, 0.2, 0.7, True), (4, -1, 0.9, 0.0, True)]
    assert flip_rate.flip_rate(records) == {"rate": 1.0, "n": 2, "flipped": 2}
    # The same scores read the other way round: both moved against the new label.
    swapped = flip_rate.flip_records(CONTEXT, TWIN, SCENE)
    assert flip_rate.flip_rate(swapped) == {"rate": 0.0, "n": 2, "flipped": 0}


def test_a_change_below_the_margin_is_no_flip():
    twin = [_det(1, 2, BOX_A, 0.23), _det(1, 3, BOX_B, 0.88)]  # +0.03 and -0.02
    records = flip_rate.flip_records(CONTEXT, SCENE, twin)
    assert [r["flipped"] for r in records] == [False, False]
    loose = flip_rate.flip_records(CONTEXT, SCENE, twin, min_change=0.0)
    assert [r["flipped"] for r in loose] == [True, True]


def test_rule_labels_count_the_control_objects_and_zero_scores_do_not_flip():
    records = flip_rate.flip_records(CONTEXT, SCENE, TWIN, labels="rule")
    assert [r["uid"] for r in records] == [3, 4, 1]
    assert records[-1]["score_original"] == records[-1]["score_twin"] == 0.0
    assert not records[-1]["flipped"]
    assert flip_rate.flip_rate(records)["rate"] == pytest.approx(2 / 3)
    assert flip_rate.per_category(records, {2: "swimmer", 3: "buoy"}) == {
        "swimmer": {"rate": 0.5, "n": 2, "flipped": 1},
        "buoy": {"rate": 1.0, "n": 1, "flipped": 1}}


def test_by_distance_bins_the_records():
    records = flip_rate.flip_records(CONTEXT, SCENE, TWIN, labels="rule")
    bins = flip_rate.by_distance(records, [0, 100, 300, 400])
    assert [(b["n"], b["flipped"], b["rate"]) for b in bins] == [(1, 1, 1.0), (1, 1, 1.0),
                                                                 (1, 0, 0.0)]
    empty = flip_rate.by_distance([], [0, 10])
    assert empty == [{"low": 0.0, "high": 10.0, "rate": None, "n": 0, "flipped": 0}]


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
