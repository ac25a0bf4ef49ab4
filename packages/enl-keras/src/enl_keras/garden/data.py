"""COCO-format folder -> TFRecords that Model Garden's detection tasks read.

The conversion is Model Garden's own (``official/vision/data/
create_coco_tf_record.py``): its ``create_tf_example`` encodes each image with
its boxes, classes, crowd flags, areas and (with ``include_masks``) PNG
instance masks, and ``tfrecord_lib.write_tf_record_dataset`` shards them.
This module only calls those functions from Python (the upstream module is a
flag-driven script), so the project's generated data sets and a real COCO
download go through the same code.

The folder layout and the annotations are read as every framework reads them
(:mod:`enl_core.coco`): malformed annotations are an error naming their ids,
boxes under 1 px inside their image are dropped with a warning that counts
them, and the kept boxes are clamped to the image, so the TFRecords hold the
boxes the torch reader trains on (upstream would silently skip a box that
crosses the image border).

For a real COCO download the upstream script is the documented command::

    python -m official.vision.data.create_coco_tf_record --logtostderr \\
        --image_dir=coco/train2017 \\
        --object_annotations_file=coco/annotations/instances_train2017.json \\
        --output_file_prefix=coco/tfrecords/train --num_shards=256 --include_masks
"""

from __future__ import annotations

import collections
import glob
import json
import os
from collections.abc import Sequence

from official.vision.data import create_coco_tf_record as coco_tf_record
from official.vision.data import tfrecord_lib

from enl_core.coco import check_annotations, clamp_box, find_split
from enl_core.validation import positive_int


def convert_coco(image_dir: str | os.PathLike | Sequence[str | os.PathLike],
                 annotations_file: str | os.PathLike, output_prefix: str | os.PathLike,
                 num_shards: int = 1, include_masks: bool = True) -> list[str]:
    """Writes one COCO split (images + instances JSON) as sharded TFRecords.

    Args:
        image_dir: folder (or folders) holding the split's image files.
        annotations_file: COCO ``instances_*.json`` of the split.
        output_prefix: path prefix; shards are ``{prefix}-00000-of-0000N.tfrecord``.
        num_shards: number of shards.
        include_masks: encode the instance masks (needed by Mask R-CNN).

    Returns:
        The shard paths, sorted. Each image of the JSON is one example.

    Raises:
        FileNotFoundError: naming `annotations_file` or `image_dir`.
        ValueError: malformed annotations (one message listing their ids).

    Example:
        >>> convert_coco("data/train", "data/annotations/instances_train.json",
        ...              "data/tfrecords/train")  # doctest: +SKIP
        ['data/tfrecords/train-00000-of-00001.tfrecord']
    """
    num_shards = positive_int("num_shards", num_shards)
    image_dirs = ([os.fspath(image_dir)] if isinstance(image_dir, (str, os.PathLike))
                  else [os.fspath(d) for d in image_dir])
    for directory in image_dirs:
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"`image_dir` must be a folder, received {directory!r}")
    annotations_file = os.fspath(annotations_file)
    if not os.path.isfile(annotations_file):
        raise FileNotFoundError(f"`annotations_file` not found, received {annotations_file!r}")
    output_prefix = os.fspath(output_prefix)
    os.makedirs(os.path.dirname(os.path.abspath(output_prefix)), exist_ok=True)

    # The same steps as upstream's _create_tf_record_from_coco_annotations,
    # minus its flag lookup (number of processes) and the caption/panoptic parts,
    # with the annotations checked and clamped by enl_core.coco.
    with open(annotations_file) as file:
        document = json.load(file)
    check = check_annotations(document, annotations_file)
    images = document["images"]
    sizes = {image["id"]: (image["width"], image["height"]) for image in images}
    id_to_name_map = {category["id"]: category["name"] for category in document["categories"]}
    img_to_obj_annotation = collections.defaultdict(list)
    for annotation in document["annotations"]:
        if check.keeps(annotation):
            box = clamp_box(annotation["bbox"], *sizes[annotation["image_id"]])
            img_to_obj_annotation[annotation["image_id"]].append({**annotation, "bbox": box})
    examples = coco_tf_record.generate_annotations(
        images=images, image_dirs=image_dirs, img_to_obj_annotation=img_to_obj_annotation,
        id_to_name_map=id_to_name_map, include_masks=include_masks)
    # One process: the data sets converted here are small, and a process pool
    # would re-import TensorFlow in every worker.
    tfrecord_lib.write_tf_record_dataset(output_prefix, examples,
                                         coco_tf_record.create_tf_example, num_shards,
                                         multiple_processes=0)
    return sorted(glob.glob(f"{output_prefix}-*-of-{num_shards:05d}.tfrecord"))


def convert_coco_folder(root: str | os.PathLike, output_dir: str | os.PathLike | None = None,
                        splits: Sequence[str] = ("train", "val"), num_shards: int = 1,
                        include_masks: bool = True) -> dict[str, list[str]]:
    """Converts a COCO-layout folder, one call per split.

    The layout is :func:`enl_core.coco.find_split`'s (the one every framework
    reads): ``root/annotations/instances_{split}.json`` and the images in
    ``root/{split}/`` (``train`` also finds ``train2017/``, ...).

    Args:
        root: the dataset folder.
        output_dir: where the shards go; default ``root/tfrecords``.
        splits: split names, e.g. ("train", "val") or ("train2017", "val2017").
        num_shards, include_masks: as in :func:`convert_coco`.

    Returns:
        ``{split: shard paths}``; the TFRecord pattern of a split is
        ``{output_dir}/{split}-*`` (Model Garden's ``input_path``).

    Raises:
        FileNotFoundError: naming the missing JSON file, image folder or image.
    """
    root = os.fspath(root)
    output_dir = os.path.join(root, "tfrecords") if output_dir is None else os.fspath(output_dir)
    shards = {}
    for split in splits:
        image_dir, annotations_file = find_split(root, split)
        shards[split] = convert_coco(image_dir, annotations_file,
                                     os.path.join(output_dir, split), num_shards, include_masks)
    return shards
