"""The embedded dataset: deterministic, valid COCO, and the context rules hold."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from enl_experiments import dataset
from enl_experiments.dataset import BALL, PERSON, SWIMMER, generate_dataset

# pycocotools' decode passes copy=False to numpy 2's __array__; harmless.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def context_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("context")
    generate_dataset(root, num_train=24, num_val=8, image_size=(128, 192), seed=3)
    return root


def test_same_seed_same_bytes_other_seed_differs(tmp_path, context_root):
    generate_dataset(tmp_path / "again", num_train=24, num_val=8, image_size=(128, 192), seed=3)
    assert _digest(tmp_path / "again") == _digest(context_root)
    generate_dataset(tmp_path / "other", num_train=24, num_val=8, image_size=(128, 192), seed=4)
    other = _digest(tmp_path / "other")
    assert other.keys() == _digest(context_root).keys()
    assert other != _digest(context_root)


def test_train_and_val_never_share_an_image(context_root):
    train = {hashlib.sha256(p.read_bytes()).hexdigest()
             for p in (context_root / "train2017").iterdir()}
    val = {hashlib.sha256(p.read_bytes()).hexdigest()
           for p in (context_root / "val2017").iterdir()}
    assert len(train) == 24 and len(val) == 8 and not train & val


@pytest.mark.parametrize("subset", ["train", "val"])
def test_coco_valid_and_masks_boxes_areas_agree(context_root, subset):
    coco = COCO(str(context_root / "annotations" / f"instances_{subset}2017.json"))
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {"person", "ball", "swimmer"}
    assert len(coco.getAnnIds()) > 0
    ids = [a["id"] for a in coco.dataset["annotations"]]
    assert len(set(ids)) == len(ids)
    for image_info in coco.loadImgs(coco.getImgIds()):
        pixels = np.asarray(Image.open(context_root / f"{subset}2017" / image_info["file_name"]))
        assert pixels.shape == (image_info["height"], image_info["width"], 3) == (128, 192, 3)
        union = np.zeros(pixels.shape[:2], dtype=int)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_info["id"])):
            assert ann["iscrowd"] == 0
            mask = coco.annToMask(ann).astype(bool)
            union += mask
            assert ann["area"] == mask.sum() > 0
            rows, cols = np.nonzero(mask)
            x, y, w, h = ann["bbox"]
            assert (x, y, x + w, y + h) == (cols.min(), rows.min(), cols.max() + 1,
                                            rows.max() + 1)
            if ann["category_id"] in (BALL, SWIMMER):
                assert ann["area"] < 32 ** 2
            if ann["category_id"] == BALL:
                # The painted pixels are the mask: a ball is white where annotated.
                assert pixels[mask].mean() > 200
        assert union.max() <= 1, "objects must not overlap"


def _near_a_person(ball, people) -> bool:
    bx, by, bw, bh = ball["bbox"]
    cx, cy = bx + bw / 2, by + bh / 2
    for x, y, w, h in (p["bbox"] for p in people):
        reach = 0.25 * h + bw + 4
        if x - reach <= cx <= x + w + reach and y <= cy <= y + h:
            return True
    return False


def _balls_near_people(root) -> tuple[int, int]:
    coco = COCO(str(root / "annotations" / "instances_train2017.json"))
    near = total = 0
    for image_id in coco.getImgIds():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        people = [a for a in anns if a["category_id"] == PERSON]
        for ball in (a for a in anns if a["category_id"] == BALL):
            total += 1
            near += _near_a_person(ball, people)
    return near, total


def test_context_split_every_ball_is_beside_a_person(context_root):
    near, total = _balls_near_people(context_root)
    assert total > 5 and near == total


def test_control_split_balls_ignore_people(tmp_path):
    generate_dataset(tmp_path, num_train=60, num_val=0, image_size=128, seed=0, split="control")
    near, total = _balls_near_people(tmp_path)
    assert total > 10 and near < 0.6 * total


def test_context_swimmer_caps_match_a_shirt(context_root):
    """Swimmers' caps carry the colour of a person's shirt in the same image."""
    coco = COCO(str(context_root / "annotations" / "instances_train2017.json"))
    checked = 0
    for info in coco.loadImgs(coco.getImgIds()):
        pixels = np.asarray(Image.open(context_root / "train2017" / info["file_name"]), float)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=info["id"]))
        shirts = []
        for person in (a for a in anns if a["category_id"] == PERSON):
            torso = person["segmentation"][1]
            x0, y0, x1, y1 = torso[0], torso[1], torso[4], torso[5]
            shirts.append(pixels[int(y0) + 2:int(y1) - 2, int(x0) + 2:int(x1) - 2].mean((0, 1)))
        for swimmer in (a for a in anns if a["category_id"] == SWIMMER):
            x, y, w, h = (int(v) for v in swimmer["bbox"])
            cap = pixels[y + 1:y + h // 2, x + w // 2 - 1:x + w // 2 + 1].reshape(-1, 3).mean(0)
            assert min(np.abs(cap - shirt).max() for shirt in shirts) < 40
            checked += 1
    assert checked > 10


@pytest.mark.parametrize("kwargs, name", [
    ({"image_size": (100, 128)}, "image_size"),
    ({"image_size": 0}, "image_size"),
    ({"num_train": -1}, "num_train"),
    ({"split": "contxt"}, "split"),
    ({"image_format": "gif"}, "image_format"),
])
def test_bad_arguments_name_themselves(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        generate_dataset(tmp_path, **{"num_train": 1, "num_val": 1, **kwargs})


def test_cli_writes_dataset_and_rejects_bad_size(tmp_path, capsys):
    assert dataset.main(["--out", str(tmp_path / "d"), "--num-train", "2", "--num-val", "1",
                         "--image-size", "64", "--format", "jpg"]) == 0
    document = json.loads((tmp_path / "d/annotations/instances_val2017.json").read_text())
    assert [i["file_name"] for i in document["images"]] == ["000000000001.jpg"]
    assert dataset.main(["--out", str(tmp_path / "e"), "--image-size", "100"]) == 2
    assert "image_size" in capsys.readouterr().err
