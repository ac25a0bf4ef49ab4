"""The strip dataset: pure in its seed, rules that hold, twins that change only context."""

from __future__ import annotations

import json

import numpy as np
import pytest

from enl_experiments import context_dataset as strip
from enl_experiments.main import reach
from enl_experiments.main.erf import feature_column, horizontal_reach, level_reach

SIZE = (64, 512)


def _layouts(count=40, size=SIZE):
    return [strip.sample_layout(np.random.default_rng([0, 1, i]), *size) for i in range(count)]


def test_generator_is_a_pure_function_of_its_key():
    first = strip.scene(3, 1, 5, *SIZE, "context", twin=True)
    second = strip.scene(3, 1, 5, *SIZE, "context", twin=True)
    assert np.array_equal(first[0], second[0]) and first[1:] == second[1:]
    other = strip.scene(4, 1, 5, *SIZE, "context")
    assert not np.array_equal(first[0], other[0])


def test_rules_hold_and_look_alikes_share_the_local_statistics():
    heads = {True: [], False: []}
    for layout in _layouts():
        labels = strip.context_labels(layout)
        shirts = [p["shirt"] for p in layout["person"]]
        assert len(set(shirts)) == len(shirts)
        for head in layout["head"]:
            assert labels[head["uid"]] == (head["colour"] in shirts)
            heads[labels[head["uid"]]].append(head["size"])
        for buoy in layout["buoy"]:
            same = [b for b in layout["buoy"] if b["colour"] == buoy["colour"]]
            assert labels[buoy["uid"]] == (len(same) == 2)
            if len(same) == 2:
                partner = next(b for b in same if b is not buoy)
                assert abs(partner["cx"] - buoy["cx"]) >= strip.MIN_CONTEXT_DISTANCE
        small = layout["head"] + layout["buoy"]
        for obj in small:
            assert all(abs(obj["cx"] - p["cx"]) >= strip.MIN_CONTEXT_DISTANCE
                       for p in layout["person"])
            assert all(np.hypot(obj["cx"] - o["cx"], obj["cy"] - o["cy"]) >= strip.MIN_SEPARATION
                       for o in small if o is not obj)
    # Swimmers and look-alike heads: about as many, the same sizes.
    assert 0.7 < len(heads[True]) / len(heads[False]) < 1.4
    assert abs(np.mean(heads[True]) - np.mean(heads[False])) < 0.4


def test_layouts_and_pixels_do_not_depend_on_the_split():
    context = strip.scene(0, 1, 2, *SIZE, "context")
    control = strip.scene(0, 1, 2, *SIZE, "control")
    persons = [a["bbox"] for a in context[1] if a["category_id"] == strip.PERSON]
    assert persons == [a["bbox"] for a in control[1] if a["category_id"] == strip.PERSON]
    # Unannotated objects are painted too: same pixels, labels differ.
    assert np.array_equal(context[0], control[0])


def test_twin_changes_only_the_context_and_labels_follow_the_rule():
    kinds = set()
    for index in range(12):
        image, annotations, _ = strip.scene(0, 1, index, *SIZE, "context")
        twin_image, twin_annotations, record = strip.scene(0, 1, index, *SIZE, "context",
                                                           twin=True)
        kinds.add(record["intervention"]["type"])
        changed = np.any(image != twin_image, axis=-1)
        assert changed.any()
        ys, xs = np.nonzero(changed)
        # Only pixels of the changed object differ: within a person's or a square's box.
        cx, cy = record["intervention"]["cx"], record["intervention"]["cy"]
        assert np.all(np.abs(xs - cx) <= 0.2 * SIZE[0] + 3) and np.all(np.abs(ys - cy) <= SIZE[0])
        for obj in record["objects"]:
            box = obj["bbox"]
            annotated = [a for a in twin_annotations if a["category_id"] == obj["category_id"]
                         and np.allclose(a["bbox"], box)]
            assert bool(annotated) == obj["label_twin"]
            assert obj["label_twin"] == obj["rule_twin"]
            assert obj["distance"] > 0
        flips = [o for o in record["objects"] if o["label_original"] != o["label_twin"]]
        assert flips, record["intervention"]
    assert kinds == set(strip.INTERVENTIONS)


def test_control_twin_keeps_the_labels():
    for index in range(6):
        _, _, record = strip.scene(0, 1, index, *SIZE, "control", twin=True)
        assert all(o["label_original"] == o["label_twin"] for o in record["objects"])
        assert any(o["rule_original"] != o["rule_twin"] for o in record["objects"])


def test_generate_dataset_writes_scenes_twins_and_the_context_file(tmp_path):
    paths = strip.generate_dataset(tmp_path, num_train=2, num_val=3, image_size=(64, 256),
                                   seed=1)
    val = json.loads(paths.val_annotations.read_text())
    twin = json.loads(paths.twin_annotations.read_text())
    assert [i["file_name"] for i in val["images"]] == [i["file_name"] for i in twin["images"]]
    assert sorted(p.name for p in paths.twin_images.iterdir()) == [
        i["file_name"] for i in twin["images"]]
    context = json.loads(paths.context.read_text())
    assert [r["image_id"] for r in context["images"]] == [1, 2, 3]
    assert {c["name"] for c in val["categories"]} == {"person", "swimmer", "buoy"}
    assert all(a["area"] < 32 ** 2 for a in val["annotations"] if a["category_id"] != 1)


@pytest.mark.parametrize(("kwargs", "name"), [({"split": "noise"}, "split"),
                                              ({"image_size": (64, 500)}, "image_size"),
                                              ({"twins": 1}, "twins"), ({"seed": -1}, "seed")])
def test_bad_arguments_are_named(tmp_path, kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        strip.generate_dataset(tmp_path, num_train=1, num_val=1, **kwargs)


def test_theoretical_reach_of_resnet18_fpn():
    # ResNet-18: 7x7/2 stem, 3x3/2 pool, 8 basic blocks: the textbook 435 px at C5.
    assert reach.backbone_receptive_fields(18)["C5"] == {"rf": 435, "stride": 32}
    levels = reach.theoretical_reach(18)
    assert levels["P2"]["rf"] == 435 + 2 * 4 and levels["P2"]["radius"] == (443 + 8) / 2
    # The strip's far half lies beyond what a P2 feature of the baseline can see.
    assert levels["P2"]["radius"] < SIZE[1] / 2
    with pytest.raises(ValueError, match="model_id"):
        reach.backbone_receptive_fields(19)


def test_horizontal_reach_of_a_known_gradient():
    gradient = np.zeros((4, 21))
    gradient[:, 10] = 5.0  # half the mass at the centre column
    gradient[0, 13] = gradient[0, 7] = 2.0  # 0.4 at 3 px
    gradient[2, 18] = 2.0  # 0.2 at 8 px
    assert horizontal_reach(gradient, 10, (0.5, 0.9, 0.99)) == {
        "fraction_0.5": 0, "fraction_0.9": 3, "fraction_0.99": 8, "farthest": 8}
    with pytest.raises(ValueError, match="gradient"):
        horizontal_reach(np.zeros((2, 3)), 1)


def test_level_reach_places_the_feature_and_counts_the_far_mass():
    # A 64 px wide input, a level 8 wide (stride 8): the feature at position 0.25
    # is column 2, centred on input column 2 * 8 + 4 = 20.
    assert feature_column(8, 0.25) == 2 and feature_column(8, 1.0) == 7
    gradient = np.zeros((2, 64))
    gradient[0, 20] = 3.0
    gradient[1, 60] = 1.0  # a quarter of the mass, 40 px away
    (level,) = level_reach({"P3": gradient}, {"P3": 8}, 64, position=0.25,
                           beyond=30).values()
    assert level["centre_x"] == 20 and level["farthest"] == 40
    assert level["mass_beyond"] == pytest.approx(0.25)
    assert level_reach({"P3": gradient}, {"P3": 8}, 64, position=0.25, beyond=40)[
        "P3"]["mass_beyond"] == 0.0
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="position"):
            feature_column(8, bad)


@pytest.mark.parametrize("split", ["context", "control"])
def test_small_objects_are_the_annotations_and_their_look_alikes(tmp_path, split):
    paths = strip.generate_dataset(tmp_path, num_train=0, num_val=6, image_size=(64, 256),
                                   seed=3, split=split)
    for annotation_file, twin in ((paths.val_annotations, False), (paths.twin_annotations, True)):
        document = json.loads(annotation_file.read_text())
        written = sorted((a["image_id"], a["category_id"], tuple(a["bbox"]))
                         for a in document["annotations"] if a["category_id"] != strip.PERSON)
        objects = {i["id"]: strip.small_objects(3, 1, i["id"] - 1, 64, 256, split, twin)
                   for i in document["images"]}
        annotated = sorted((image_id, o["category_id"], tuple(o["bbox"]))
                           for image_id, entries in objects.items() for o in entries
                           if o["label"])
        assert annotated == written
        everything = [o for entries in objects.values() for o in entries]
        assert any(not o["label"] for o in everything)  # the look-alikes are there too
        if split == "context":
            assert all(o["label"] == o["rule"] for o in everything)
    with pytest.raises(ValueError, match="split"):
        strip.small_objects(3, 1, 0, 64, 256, "noise")


def test_the_decider_distance_is_where_the_rule_looks():
    """Exactly the objects the rule annotates have a deciding object, and it lies at least
    MIN_CONTEXT_DISTANCE away (horizontally), at the nearest person in the head's colour
    or at the other square of the square's colour."""
    for layout in _layouts():
        rules, distances = strip.context_labels(layout), strip.decider_distances(layout)
        assert set(distances) == set(rules)
        for kind in ("head", "buoy"):
            for obj in layout[kind]:
                if kind == "head":
                    deciders = [p for p in layout["person"] if p["shirt"] == obj["colour"]]
                else:
                    deciders = [o for o in layout["buoy"]
                                if o["colour"] == obj["colour"] and o is not obj]
                assert rules[obj["uid"]] == (distances[obj["uid"]] is not None)
                if deciders:
                    nearest = min(np.hypot(obj["cx"] - d["cx"], obj["cy"] - d["cy"])
                                  for d in deciders)
                    assert distances[obj["uid"]] == pytest.approx(nearest, abs=0.005)
                    assert distances[obj["uid"]] >= strip.MIN_CONTEXT_DISTANCE
    entries = strip.small_objects(3, 1, 0, 64, 256, "control")
    layout = strip.sample_layout(np.random.default_rng([3, 1, 0]), 64, 256)
    assert {e["uid"]: e["decider_distance"] for e in entries} == strip.decider_distances(layout)
