"""COCO folder -> TFRecords (enl_keras.garden.data), read back with Model Garden."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.garden


def _decoded(pattern_paths):
    import tensorflow as tf
    from official.vision.dataloaders import tf_example_decoder

    decoder = tf_example_decoder.TfExampleDecoder(include_mask=True)
    return [decoder.decode(record) for record in tf.data.TFRecordDataset(pattern_paths)]


def test_every_image_and_annotation_round_trips(coco_tfrecords):
    from pycocotools import mask as mask_utils

    document = json.loads(coco_tfrecords["paths"].train_annotations.read_text())
    examples = _decoded(coco_tfrecords["shards"]["train"])
    assert len(examples) == len(document["images"])
    for example in examples:
        image_id = int(example["source_id"].numpy())
        image = next(i for i in document["images"] if i["id"] == image_id)
        annotations = [a for a in document["annotations"] if a["image_id"] == image_id]
        assert tuple(example["image"].shape) == (image["height"], image["width"], 3)
        np.testing.assert_array_equal(example["groundtruth_classes"].numpy(),
                                      [a["category_id"] for a in annotations])
        height, width = image["height"], image["width"]
        expected_boxes = [[y / height, x / width, (y + h) / height, (x + w) / width]
                          for x, y, w, h in (a["bbox"] for a in annotations)]
        np.testing.assert_allclose(example["groundtruth_boxes"].numpy(),
                                   np.reshape(expected_boxes, (-1, 4)),
                                   rtol=1e-6, atol=1e-6)
        masks = example["groundtruth_instance_masks"].numpy()
        for mask, annotation in zip(masks, annotations, strict=True):
            rle = mask_utils.frPyObjects(annotation["segmentation"], height, width)
            expected = np.max(mask_utils.decode(rle), axis=2)
            np.testing.assert_array_equal(mask, expected)


def test_shards_split_the_examples(coco_tfrecords, tmp_path):
    from enl_keras.garden.data import convert_coco

    paths = coco_tfrecords["paths"]
    shards = convert_coco(paths.train_images, paths.train_annotations, tmp_path / "train",
                          num_shards=2, include_masks=False)
    assert [p.rsplit("/", 1)[1] for p in shards] == ["train-00000-of-00002.tfrecord",
                                                     "train-00001-of-00002.tfrecord"]
    examples = _decoded(shards)
    assert len(examples) == 2
    assert "groundtruth_instance_masks_png" in examples[0]  # decoder pads absent masks
    assert examples[0]["groundtruth_instance_masks_png"].shape[0] == 0


def test_missing_inputs_name_the_argument(coco_tfrecords, tmp_path):
    from enl_keras.garden.data import convert_coco, convert_coco_folder

    paths = coco_tfrecords["paths"]
    with pytest.raises(FileNotFoundError, match="annotations_file"):
        convert_coco(paths.train_images, tmp_path / "none.json", tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="image_dir"):
        convert_coco(tmp_path / "no_images", paths.train_annotations, tmp_path / "x")
    with pytest.raises(TypeError, match="num_shards"):
        convert_coco(paths.train_images, paths.train_annotations, tmp_path / "x", num_shards=1.5)
    with pytest.raises(FileNotFoundError, match="instances_test.json"):
        convert_coco_folder(tmp_path, splits=("test",))


def _with_annotations(paths, tmp_path, edit):
    """The train split's JSON with ``edit(document)`` applied, written to tmp_path."""
    document = json.loads(paths.train_annotations.read_text())
    edit(document)
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(document))
    return path, document


def test_boxes_are_checked_as_the_torch_reader_checks_them(coco_tfrecords, tmp_path):
    """enl_core.coco's rules: a box outside its image is dropped with a warning that
    counts it, a box crossing the border is clamped, a negative size is an error."""
    from enl_keras.garden.data import convert_coco

    paths = coco_tfrecords["paths"]

    def move(document):
        first, second = document["annotations"][:2]
        first["bbox"] = [500.0, 500.0, 10.0, 10.0]  # outside the 128 px image
        second["bbox"] = [second["bbox"][0], second["bbox"][1], 500.0, second["bbox"][3]]

    path, document = _with_annotations(paths, tmp_path, move)
    with pytest.warns(UserWarning, match=r"dropped 1 of \d+ boxes.*annotation "
                                         rf"{document['annotations'][0]['id']} "):
        shards = convert_coco(paths.train_images, path, tmp_path / "train", include_masks=False)
    first, second = document["annotations"][:2]
    examples = {int(e["source_id"].numpy()): e for e in _decoded(shards)}
    kept = [a for a in document["annotations"] if a["image_id"] == first["image_id"]][1:]
    assert examples[first["image_id"]]["groundtruth_boxes"].shape[0] == len(kept)
    boxes = examples[second["image_id"]]["groundtruth_boxes"].numpy()
    assert np.any(np.isclose(boxes[:, 3], 1.0))  # clamped to the right border, kept

    def negative(document):
        document["annotations"][0]["bbox"][2] = -4.0

    path, document = _with_annotations(paths, tmp_path, negative)
    with pytest.raises(ValueError, match=rf"image {document['annotations'][0]['image_id']} "
                                         rf"annotation {document['annotations'][0]['id']}: "):
        convert_coco(paths.train_images, path, tmp_path / "bad")
