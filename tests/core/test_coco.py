"""enl_core.coco: the folder layout, the annotation checks and the scoring every framework uses."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from enl_core import coco

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 2, "name": "ball"},
              {"id": 5, "name": "swimmer"}]


def _rectangle(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def document(boxes_per_image=None, size=(128, 96)):
    """A COCO instances document: 3 images of ``size`` (W, H), small and medium boxes."""
    boxes_per_image = boxes_per_image or {
        1: [(1, 10, 10, 12, 9), (2, 60, 40, 20, 30)],
        2: [(5, 5, 50, 8, 6), (1, 30, 20, 40, 35)],
        3: [(2, 70, 10, 10, 10), (5, 20, 60, 15, 12)],
    }
    images, annotations = [], []
    for image_id, boxes in boxes_per_image.items():
        images.append({"id": image_id, "file_name": f"{image_id:012d}.png", "width": size[0],
                       "height": size[1]})
        for category_id, x, y, w, h in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": category_id, "bbox": [x, y, w, h],
                                "area": float(w * h), "iscrowd": 0,
                                "segmentation": _rectangle(x, y, w, h)})
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}


def write_split(root, split, doc, images_folder=None, skip=()):
    """Writes ``annotations/instances_<split>.json`` and (empty) image files."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    path = root / "annotations" / f"instances_{split}.json"
    path.write_text(json.dumps(doc))
    folder = root / (images_folder or split)
    folder.mkdir(parents=True, exist_ok=True)
    for image in doc["images"]:
        if image["file_name"] not in skip:
            (folder / image["file_name"]).write_bytes(b"")
    return path


# --------------------------------------------------------------------- layout

@pytest.mark.parametrize("folder", ["val2017", "images/val2017", "images", "."])
def test_find_split_accepts_every_documented_images_folder(tmp_path, folder):
    annotations = write_split(tmp_path, "val2017", document(), images_folder=folder)
    assert coco.find_split(tmp_path, "val2017") == ((tmp_path / folder).resolve()
                                                    if folder != "." else tmp_path,
                                                    annotations)


def test_a_split_without_the_year_finds_the_coco_2017_names(tmp_path):
    annotations = write_split(tmp_path, "train2017", document())
    assert coco.find_split(tmp_path, "train") == (tmp_path / "train2017", annotations)
    write_split(tmp_path, "val2017", document())
    paths = coco.find_dataset(tmp_path)
    assert paths == coco.CocoPaths(tmp_path, tmp_path / "train2017", tmp_path / "val2017",
                                   annotations, tmp_path / "annotations" /
                                   "instances_val2017.json")


def test_a_missing_first_image_is_reported_as_the_missing_file(tmp_path):
    doc = document()
    write_split(tmp_path, "train2017", doc, skip=(doc["images"][0]["file_name"],))
    with pytest.raises(FileNotFoundError) as error:
        coco.find_split(tmp_path, "train2017")
    message = str(error.value)
    assert "'000000000001.png'" in message and "is missing" in message
    assert str(tmp_path / "train2017") in message
    assert "20172017" not in message and "no images folder" not in message


def test_a_missing_images_folder_is_reported_as_the_folder(tmp_path):
    write_split(tmp_path, "val2017", document(), images_folder="elsewhere")
    with pytest.raises(FileNotFoundError, match="no images folder for split 'val2017'") as error:
        coco.find_split(tmp_path, "val2017")
    assert str(tmp_path / "val2017") in str(error.value)
    assert "20172017" not in str(error.value)


def test_a_missing_annotation_file_names_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match="instances_test.json.*instances_test2017.json"):
        coco.find_split(tmp_path, "test")
    with pytest.raises(ValueError, match="`split`"):
        coco.find_split(tmp_path, "")


# ---------------------------------------------------------------- annotations

def test_valid_annotations_pass_and_drop_nothing(recwarn):
    check = coco.check_annotations(document(), "doc.json")
    assert check.total == 6 and check.dropped == {}
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_boxes_too_small_inside_the_image_are_dropped_counted_and_named():
    doc = document({1: [(1, 10, 10, 12, 9),      # kept
                        (1, 200, 10, 12, 9),     # right of the 128 px image
                        (2, 30, 30, 0, 5),       # zero width (COCO 2017 holds such boxes)
                        (2, 127.5, 5, 20, 20),   # 0.5 px inside the image
                        (5, -30, -30, 40, 40)]})  # crosses the corner: clamped, kept
    with pytest.warns(UserWarning, match=r"doc.json: dropped 3 of 5 boxes") as record:
        check = coco.check_annotations(doc, "doc.json")
    assert sorted(check.dropped) == [2, 3, 4]
    assert all(image == 1 for image, _ in check.dropped.values())
    message = str(record[0].message)
    assert "annotation 2" in message and "outside the image" in message
    assert check.keeps(doc["annotations"][0]) and check.keeps(doc["annotations"][4])
    assert not check.keeps(doc["annotations"][1])


def test_malformed_annotations_are_one_error_listing_every_id():
    doc = document()
    doc["annotations"][0]["bbox"] = [1, 2, -3, 4]
    doc["annotations"][1]["bbox"] = [1, 2, float("nan"), 4]
    doc["annotations"][2]["bbox"] = [1, 2, 3]
    doc["annotations"][3]["category_id"] = 99
    doc["annotations"][4]["image_id"] = 42
    doc["images"][2]["width"] = 0
    with pytest.raises(ValueError) as error:
        coco.check_annotations(doc, "bad.json")
    message = str(error.value)
    assert message.startswith("bad.json: 6 malformed entries")
    for expected in ("image 1 annotation 1: bbox [1, 2, -3, 4] has a negative width",
                     "image 1 annotation 2: bbox must be four finite numbers",
                     "image 2 annotation 3: bbox must be four finite numbers",
                     "image 2 annotation 4: unknown category_id 99",
                     "image 42 annotation 5: no such image", "image 3: width, height 0, 96"):
        assert expected in message


def test_clamp_box_stays_inside_in_floating_point():
    assert coco.clamp_box([-5, 10, 20, 100], 64, 48) == [0.0, 10.0, 15.0, 38.0]
    x, y, w, h = coco.clamp_box([0.1, 0.7, 1000.0, 1000.0], 640.0, 427.0)
    assert x + w <= 640.0 and y + h <= 427.0 and 640.0 - (x + w) < 1e-9


def test_load_coco_checks_when_the_dataset_is_opened(tmp_path):
    doc = document()
    doc["annotations"][0]["bbox"] = [1, 2, -3, 4]
    path = write_split(tmp_path, "val2017", doc)
    with pytest.raises(ValueError, match="image 1 annotation 1"):
        coco.load_coco(path)
    with pytest.raises(FileNotFoundError, match="annotation_file"):
        coco.load_coco(tmp_path / "none.json")


# -------------------------------------------------------------------- scoring

@pytest.fixture()
def ground_truth(tmp_path):
    return write_split(tmp_path, "val2017", document())


@pytest.fixture()
def perfect(ground_truth):
    """Ground truth as detections: boxes and RLE masks, score 1."""
    gt, _ = coco.load_coco(ground_truth)
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 1.0, "segmentation": coco.encode_mask(gt.annToMask(a))}
            for a in gt.dataset["annotations"]]


def test_perfect_detections_score_100_percent(ground_truth, perfect):
    result = coco.evaluate(ground_truth, perfect)
    for iou_type in coco.IOU_TYPES:
        assert set(result[iou_type]) == {*coco.METRICS, "per_category"}
        assert result[iou_type]["AP"] == pytest.approx(100.0)
        assert result[iou_type]["APs"] == pytest.approx(100.0)
        assert result[iou_type]["per_category"] == {
            "person": pytest.approx(100.0), "ball": pytest.approx(100.0),
            "swimmer": pytest.approx(100.0)}
        # no large (>= 96^2) objects: COCO's -1 is None
        assert result[iou_type]["APl"] is None


def test_no_detections_score_0_and_a_missing_class_lowers_only_its_ap(ground_truth, perfect):
    empty, summaries = coco.evaluate_with_summary(ground_truth, [], ("bbox",))
    assert empty["bbox"]["AP"] == 0.0 and empty["bbox"]["APl"] is None
    assert "Average Precision" in summaries["bbox"]
    without_balls = coco.evaluate(ground_truth, [d for d in perfect if d["category_id"] != 2])
    per_category = without_balls["bbox"]["per_category"]
    assert per_category["ball"] == 0.0 and per_category["person"] == pytest.approx(100.0)
    assert without_balls["bbox"]["AP"] == pytest.approx(200.0 / 3, abs=0.01)


def test_image_ids_restrict_the_evaluation(ground_truth, perfect):
    only_first = [d for d in perfect if d["image_id"] == 1]
    assert coco.evaluate(ground_truth, only_first, ("bbox",), image_ids=[1])["bbox"][
        "AP"] == pytest.approx(100.0)
    assert coco.evaluate(ground_truth, only_first, ("bbox",))["bbox"]["AP"] < 100.0
    with pytest.raises(ValueError, match="image_ids.*77"):
        coco.evaluate(ground_truth, perfect, ("bbox",), image_ids=[1, 77])


def test_shifted_boxes_lower_ap75_before_ap50(ground_truth, perfect):
    shifted = [{**d, "bbox": [d["bbox"][0] + 0.2 * d["bbox"][2], *d["bbox"][1:]]}
               for d in perfect]
    result = coco.evaluate(ground_truth, shifted, iou_types=("bbox",))
    assert result["bbox"]["AP50"] == pytest.approx(100.0)
    assert result["bbox"]["AP75"] < 100.0


def test_evaluate_rejects_bad_arguments(ground_truth, perfect, tmp_path):
    with pytest.raises(ValueError, match="iou_types"):
        coco.evaluate(ground_truth, perfect, iou_types=("keypoints",))
    boxes_only = [{k: v for k, v in d.items() if k != "segmentation"} for d in perfect]
    with pytest.raises(ValueError, match="segm"):
        coco.evaluate(ground_truth, boxes_only)
    (tmp_path / "not_a_list.json").write_text("{}")
    with pytest.raises(ValueError, match="JSON list"):
        coco.evaluate(ground_truth, tmp_path / "not_a_list.json")


def test_without_pycocotools_enl_core_imports_and_coco_names_the_extra(monkeypatch, tmp_path):
    for name in [m for m in sys.modules if m == "pycocotools" or m.startswith("pycocotools.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # import pycocotools -> ImportError
    import enl_core  # noqa: F401

    write_split(tmp_path, "val2017", document())
    assert coco.find_split(tmp_path, "val2017")[0] == tmp_path / "val2017"  # no pycocotools
    with pytest.raises(ImportError, match=r"pip install enl-core\[coco\]"):
        coco.evaluate(tmp_path / "annotations" / "instances_val2017.json", [])
    with pytest.raises(ImportError, match=r"pip install enl-core\[coco\]"):
        coco.load_coco(tmp_path / "annotations" / "instances_val2017.json")
    with pytest.raises(ImportError, match=r"pip install enl-core\[coco\]"):
        coco.encode_mask(np.zeros((2, 2), bool))
