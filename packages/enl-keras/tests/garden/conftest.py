"""Shared fixtures of the Model Garden suite: one tiny COCO-format data set.

Built once per session with the project's generator
(``enl_experiments.dataset``) and converted with ``enl_keras.garden.data``.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

IMAGE_SIZE = 128  # a multiple of 64 (Model Garden's padding to 2^max_level)


@pytest.fixture(scope="session")
def coco_tfrecords(tmp_path_factory):
    """Two train and two val images (128 px, 4-8 objects, masks): JSON + TFRecords."""
    from enl_experiments.dataset import generate_dataset
    from enl_keras.garden.data import convert_coco_folder

    root = tmp_path_factory.mktemp("coco")
    paths = generate_dataset(root, num_train=2, num_val=2, image_size=IMAGE_SIZE, seed=5)
    shards = convert_coco_folder(root, num_shards=1)
    return {"root": root, "paths": paths, "shards": shards,
            "train_pattern": str(root / "tfrecords" / "train-*"),
            "val_pattern": str(root / "tfrecords" / "val-*"),
            "val_annotations": str(paths.val_annotations)}
