"""What context is worth: the context-blind reference and a model's worth table, on
generated strips whose answers are known."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from enl_core.coco import find_dataset
from enl_experiments import context_dataset as strip
from enl_experiments.main import context_eval, flip_rate, report, worth


@pytest.fixture(scope="module")
def strips(tmp_path_factory):
    root = tmp_path_factory.mktemp("strip")
    strip.generate_dataset(root, num_train=0, num_val=12, image_size=(64, 256), seed=5)
    paths = find_dataset(root, "train2017", "val2017")
    return paths, context_eval.small_objects(paths)


@pytest.mark.parametrize("split", ["context", "control"])
def test_small_objects_of_each_subset_are_its_annotations_and_look_alikes(tmp_path, split):
    strip.generate_dataset(tmp_path, num_train=4, num_val=3, image_size=(64, 256), seed=2,
                           split=split, twins=False)
    paths = find_dataset(tmp_path, "train2017", "val2017")
    found = {subset: context_eval.small_objects(paths, subset) for subset in ("train", "val")}
    assert context_eval.small_objects(paths) == found["val"]
    for subset, annotation_file in (("train", paths.train_annotations),
                                    ("val", paths.val_annotations)):
        document = json.loads(annotation_file.read_text())
        written = sorted((a["image_id"], a["category_id"], tuple(a["bbox"]))
                         for a in document["annotations"] if a["category_id"] != strip.PERSON)
        annotated = sorted((image_id, o["category_id"], tuple(o["bbox"]))
                           for image_id, entries in found[subset].items() for o in entries
                           if o["label"])
        assert annotated == written, subset
        assert any(not o["label"] for e in found[subset].values() for o in e)
    # Image ids restart at 1 in each subset: the two must be other strips.
    assert found["train"][1] != found["val"][1]
    with pytest.raises(ValueError, match="`subset`.*'twin'"):
        context_eval.small_objects(paths, "twin")


def _labelled(objects, score_of):
    return [{"image_id": image_id, "category_id": o["category_id"], "bbox": list(o["bbox"]),
             "score": score_of(o)} for image_id, entries in objects.items() for o in entries]


def test_blind_reference_lies_between_the_base_rate_and_perfect(strips):
    paths, objects = strips
    blind = context_eval.context_blind(paths, objects, draws=4)
    for name, category_id in (("swimmer", strip.SWIMMER), ("buoy", strip.BUOY)):
        entries = [o for e in objects.values() for o in e if o["category_id"] == category_id]
        rate = 100.0 * sum(o["label"] for o in entries) / len(entries)
        # With exact boxes every object is found: the precision envelope never falls
        # below the final precision, the share of annotated objects.
        assert blind[name]["n"] == 4
        assert all(rate - 1e-3 <= value < 100.0 for value in blind[name]["values"])
    assert context_eval.context_blind(paths, objects, draws=4) == blind  # it repeats


def test_worth_of_a_detector_that_follows_the_labels_and_of_one_that_ignores_them(strips):
    paths, objects = strips
    follows = context_eval.context_worth(paths, objects,
                                         _labelled(objects, lambda o: 0.9 if o["label"] else 0.4))
    by_distance = follows.pop("auc_distance")
    assert follows == {"ap": {"swimmer": 100.0, "buoy": 100.0},
                       "perfect": {"swimmer": 100.0, "buoy": 100.0},
                       "auc": {"swimmer": 1.0, "buoy": 1.0},
                       "auc_rule": {"swimmer": 1.0, "buoy": 1.0}}
    # The flip rate's bins over the strip's width; every bin with objects at 1.
    edges = flip_rate.distance_edges(256, context_eval.DISTANCE_BINS)
    for name, category_id in (("swimmer", strip.SWIMMER), ("buoy", strip.BUOY)):
        bins = by_distance[name]
        assert [(b["low"], b["high"]) for b in bins] == list(zip(edges, edges[1:], strict=False))
        annotated = [o for e in objects.values() for o in e
                     if o["category_id"] == category_id and o["rule"]]
        assert sum(b["annotated"] for b in bins) == len(annotated)
        assert all(b["auc"] == 1.0 for b in bins if b["annotated"])
    rng = np.random.default_rng(0)
    ignores = context_eval.context_worth(paths, objects, flip_rate.context_blind_detections(
        objects, rng))
    # Its own boxes are exact, so perfect context makes it perfect.
    assert ignores["perfect"] == {"swimmer": 100.0, "buoy": 100.0}
    assert all(value < 100.0 for value in ignores["ap"].values())
    assert all(0.0 < value < 1.0 for value in ignores["auc"].values())


def test_the_worth_table_and_the_rescoring_command(strips, tmp_path, capsys):
    paths, objects = strips
    detections = _labelled(objects, lambda o: 0.9 if o["label"] else 0.4)
    labels = {"baseline": "baseline", "3enl_td": "+3ENL TD"}
    run = tmp_path / "run"
    for model in labels:
        (run / "runs" / f"{model}-seed0").mkdir(parents=True)
        (run / "runs" / f"{model}-seed0" / "detections.json").write_text(json.dumps(detections))
    (run / "metrics.json").write_text(json.dumps(
        {"labels": labels, "meta": {"seeds": [0], "data": str(paths.root)}}))
    table, numbers = worth.worth([run])
    assert numbers["worth"]["3enl_td"][0]["ap"] == {"swimmer": 100.0, "buoy": 100.0}
    assert numbers["context_blind"] == context_eval.context_blind(paths, objects)
    assert "| +3ENL TD: score AUC, annotated vs look-alike | 100.0 | 100.0 |" in table
    assert "context-blind reference" in table and "context rule" not in table  # not control
    results = {m: [{"worth": numbers["worth"][m][0]}] for m in labels}
    assert table == (context_eval.worth_table(results, labels, False, numbers["context_blind"])
                     + "\n\n" + context_eval.auc_distance_table(results, labels))
    assert "| score AUC (%) by distance to the deciding object | baseline | +3ENL TD |" in table
    assert worth.main([str(run), "--json", str(tmp_path / "w.json")]) == 0
    assert capsys.readouterr().out.strip() == table
    assert json.loads((tmp_path / "w.json").read_text())["split"] == "context"
    assert report.cell(numbers["context_blind"]["buoy"]) in table


def test_the_rescoring_command_names_what_is_missing(strips, tmp_path, capsys):
    paths, _ = strips
    assert worth.main([str(tmp_path / "nothing")]) == 2
    assert "has no metrics.json" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(
        {"labels": {"baseline": "baseline"}, "meta": {"seeds": [0], "data": str(paths.root)}}))
    with pytest.raises(ValueError, match="detections.json is missing"):
        worth.worth([run])
    with pytest.raises(ValueError, match="draws"):
        context_eval.context_blind(paths, {}, draws=1)


def _run_folder(tmp_path, **meta):
    """A finished run of the baseline at seed 0 (its metrics.json only), ``meta`` added."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(
        {"labels": {"baseline": "baseline"}, "meta": {"seeds": [0], **meta}}))
    return run


def test_data_of_another_split_is_refused(strips, tmp_path):
    paths, _ = strips
    run = _run_folder(tmp_path, data=str(paths.root), split="control")
    with pytest.raises(ValueError, match="'context' split, but .* 'control' split"):
        worth.worth([run])


def test_data_of_another_name_is_refused(strips, tmp_path):
    """The folder's name keys the data (seed, size, counts): another name is other data."""
    paths, _ = strips
    run = _run_folder(tmp_path, data=str(tmp_path / "strip-context-64x256px-0-12-seed6"))
    with pytest.raises(ValueError, match="is not the data .* ran on .*seed6"):
        worth.worth([run], data=paths.root)


def test_a_recorded_digest_checks_the_content_not_the_name(strips, tmp_path):
    """A run that recorded its labels' sha256 accepts a renamed copy of its data
    and refuses other data under its own folder name."""
    paths, _ = strips
    digest = context_eval.labels_digest(paths)
    run = _run_folder(tmp_path, data=str(paths.root), data_sha256=digest)
    copy = tmp_path / "renamed-copy"
    shutil.copytree(paths.root, copy)
    with pytest.raises(ValueError, match="baseline-seed0.*detections.json is missing"):
        worth.worth([run], data=copy)  # past the data checks: only the detections are absent
    other = tmp_path / "other" / paths.root.name
    strip.generate_dataset(other, num_train=0, num_val=12, image_size=(64, 256), seed=6)
    with pytest.raises(ValueError, match="holds other labels than the data .* sha256"):
        worth.worth([run], data=other)


def test_a_folder_that_is_no_dataset_is_named(tmp_path, capsys):
    run = _run_folder(tmp_path, data=str(tmp_path))
    assert worth.main([str(run), "--data", str(tmp_path)]) == 2
    assert "is not a dataset folder" in capsys.readouterr().err


def test_the_rescoring_command_adds_flip_and_wrong_way_rates_where_twins_were_kept(
        strips, tmp_path, capsys):
    """A model whose scores follow the labels in the scenes and in the twins flips
    every label change and never moves the wrong way; one whose scores follow
    them backwards does the opposite."""
    paths, _ = strips
    context = json.loads((paths.root / "annotations" / "context_val2017.json").read_text())

    def scores(label_key):
        return [{"image_id": image["image_id"], "category_id": obj["category_id"],
                 "bbox": obj["bbox"], "score": 0.9 if obj[label_key] else 0.4}
                for image in context["images"] for obj in image["objects"]]

    changes = sum(obj["label_original"] != obj["label_twin"]
                  for image in context["images"] for obj in image["objects"])
    assert changes > 0
    labels = {"baseline": "baseline", "3enl_td": "+3ENL TD"}
    run = tmp_path / "run"
    for model, (scene, twin) in {"baseline": ("label_original", "label_twin"),
                                 "3enl_td": ("label_twin", "label_original")}.items():
        folder = run / "runs" / f"{model}-seed0"
        (folder / "twin").mkdir(parents=True)
        (folder / "detections.json").write_text(json.dumps(scores(scene)))
        (folder / "twin" / "detections.json").write_text(json.dumps(scores(twin)))
    (run / "metrics.json").write_text(json.dumps(
        {"labels": labels, "meta": {"seeds": [0], "data": str(paths.root)}}))
    table, numbers = worth.worth([run])
    follows, backwards = numbers["flip"]["baseline"][0], numbers["flip"]["3enl_td"][0]
    assert follows["flip"]["all"] == {"rate": 1.0, "n": changes, "flipped": changes,
                                      "against": 0, "against_rate": 0.0}
    assert backwards["flip"]["all"] == {"rate": 0.0, "n": changes, "flipped": 0,
                                        "against": changes, "against_rate": 1.0}
    assert "| all | 100.0 / 0.0 | 0.0 / 100.0 |" in table
    # Without the twins' detections the flip table is left out, not guessed.
    (run / "runs" / "3enl_td-seed0" / "twin" / "detections.json").unlink()
    table, numbers = worth.worth([run])
    assert "flip" not in numbers and "wrong-way" not in table


def test_the_rescoring_command_draws_the_reach_figure_only_with_twins(strips, tmp_path, capsys):
    paths, _ = strips
    context = json.loads((paths.root / "annotations" / "context_val2017.json").read_text())
    detections = [{"image_id": image["image_id"], "category_id": obj["category_id"],
                   "bbox": obj["bbox"], "score": 0.5}
                  for image in context["images"] for obj in image["objects"]]
    run = tmp_path / "run"
    folder = run / "runs" / "baseline-seed0"
    (folder / "twin").mkdir(parents=True)
    (folder / "detections.json").write_text(json.dumps(detections))
    (run / "metrics.json").write_text(json.dumps(
        {"labels": {"baseline": "baseline"},
         "meta": {"seeds": [0], "data": str(paths.root), "profile": "tiny"}}))
    figure = tmp_path / "reach.png"
    assert worth.main([str(run), "--figure", str(figure)]) == 2
    assert "`--figure`" in capsys.readouterr().err and not figure.exists()
    (folder / "twin" / "detections.json").write_text(json.dumps(detections))
    assert worth.main([str(run), "--figure", str(figure)]) == 0
    assert "| all | 0.0 / 0.0 |" in capsys.readouterr().out
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
