"""A COCO-format instance dataset for torchvision's detectors.

Reads an images folder and an ``instances_*.json`` (boxes ``[x, y, w, h]``,
masks as polygons or RLE, ``iscrowd``) with pycocotools and yields what
``FasterRCNN`` / ``MaskRCNN`` expect: a float image ``(3, H, W)`` in [0, 1]
and a target dict with ``boxes`` (xyxy), ``labels``, ``masks`` (uint8
``(K, H, W)``), ``image_id``, ``area`` and ``iscrowd``.

Labels are contiguous: the sorted category ids map to ``1..K`` (0 is
background), so ``num_classes = K + 1``; :attr:`CocoDetection.label_to_category`
maps them back for evaluation. Crowd regions are not training targets (as in
torchvision's detection references); evaluation reads them from the JSON.

The folder layout, the annotation checks (malformed entries are an error
naming their ids; boxes under 1 px inside the image are dropped with a
warning that counts them) and the box clamping are :mod:`enl_core.coco`'s,
shared with the Model Garden converter.

Random horizontal flips are drawn from ``(seed, epoch, index)`` alone, not
from a global generator, so the data a step sees does not depend on the
number of processes or data-loader workers, and a resumed run sees what the
uninterrupted one would have.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from enl_core.coco import clamp_box, find_split, load_coco
from enl_torch.data.seeding import derived_seed


def resolve_image_path(images_dir: str, file_name: str) -> str:
    """``images_dir/file_name``, or raises naming both."""
    path = os.path.join(images_dir, file_name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {file_name!r} of the annotations is not in "
                                f"`images_dir` {images_dir!r}")
    return path


class CocoDetection(Dataset):
    """COCO-format images + instances JSON as torchvision detection samples.

    Args:
        images_dir: folder the JSON's ``file_name`` entries are relative to.
        annotation_file: the ``instances_*.json``.
        train: drop images without a usable (non-crowd, non-empty) box, as a
            detector cannot train on them; evaluation keeps every image.
        hflip_prob: probability of a horizontal flip (0 disables it).
        seed: seed of the flips (with the epoch and the index).
        masks: decode instance masks (Mask R-CNN); False for Faster R-CNN.

    Attributes:
        annotation_check: the :class:`enl_core.coco.AnnotationCheck` of the
            JSON (``dropped``: the boxes that are no training target).

    Raises:
        FileNotFoundError: the JSON or the images folder is missing.
        ValueError: ``hflip_prob`` outside [0, 1]; malformed annotations
            (one message listing the image and annotation ids).
    """

    def __init__(self, images_dir: str, annotation_file: str, *, train: bool = False,
                 hflip_prob: float = 0.0, seed: int = 0, masks: bool = True) -> None:
        if not os.path.isfile(annotation_file):
            raise FileNotFoundError(f"`annotation_file` not found: {annotation_file!r}")
        if not os.path.isdir(images_dir):
            raise FileNotFoundError(f"`images_dir` not found: {images_dir!r}")
        if not 0.0 <= float(hflip_prob) <= 1.0:
            raise ValueError(f"`hflip_prob` must be in [0, 1], received {hflip_prob!r}")
        self.images_dir = os.fspath(images_dir)
        self.annotation_file = os.fspath(annotation_file)
        self.coco, self.annotation_check = load_coco(annotation_file)
        self.hflip_prob = float(hflip_prob)
        self.seed = int(seed)
        self.masks = bool(masks)
        self.epoch = 0
        category_ids = sorted(self.coco.getCatIds())
        self.label_to_category = {label: cat for label, cat in enumerate(category_ids, start=1)}
        self.category_to_label = {cat: label for label, cat in self.label_to_category.items()}
        image_ids = sorted(self.coco.getImgIds())
        if train:
            image_ids = [i for i in image_ids if self._usable_annotations(i)]
        self.image_ids = image_ids

    @property
    def num_classes(self) -> int:
        """Categories + background."""
        return len(self.label_to_category) + 1

    def set_epoch(self, epoch: int) -> None:
        """Selects the flips of ``epoch`` (call before iterating)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.image_ids)

    def _usable_annotations(self, image_id: int) -> list[dict[str, Any]]:
        annotations = self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id, iscrowd=False))
        return [a for a in annotations if self.annotation_check.keeps(a)]

    def _flip(self, index: int) -> bool:
        if self.hflip_prob == 0.0:
            return False
        generator = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch, index))
        return bool(torch.rand((), generator=generator) < self.hflip_prob)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image_id = self.image_ids[index]
        info = self.coco.loadImgs(image_id)[0]
        path = resolve_image_path(self.images_dir, info["file_name"])
        with Image.open(path) as file:
            pixels = np.array(file.convert("RGB"))  # H, W, 3 uint8 (a writable copy)
        image = torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255.0)  # 3, H, W
        height, width = image.shape[-2:]
        annotations = self._usable_annotations(image_id)
        boxes = torch.tensor([clamp_box(a["bbox"], width, height) for a in annotations],
                             dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        boxes[:, 0::2].clamp_(0, width)  # the float32 rounding of x + w
        boxes[:, 1::2].clamp_(0, height)
        target = {
            "boxes": boxes,
            "labels": torch.tensor([self.category_to_label[a["category_id"]] for a in annotations],
                                   dtype=torch.int64),
            "image_id": torch.tensor(image_id, dtype=torch.int64),
            "area": torch.tensor([float(a.get("area", 0.0)) for a in annotations],
                                 dtype=torch.float32),
            "iscrowd": torch.zeros(len(annotations), dtype=torch.int64),
        }
        if self.masks:
            masks = [self.coco.annToMask(a) for a in annotations]
            target["masks"] = (torch.from_numpy(np.stack(masks)) if masks
                               else torch.zeros((0, height, width), dtype=torch.uint8))
        if self._flip(index):
            image = image.flip(-1)
            boxes = target["boxes"]
            target["boxes"] = torch.stack([width - boxes[:, 2], boxes[:, 1],
                                           width - boxes[:, 0], boxes[:, 3]], dim=1)
            if self.masks:
                target["masks"] = target["masks"].flip(-1)
        return image, target


def collate(batch):
    """Lists of images and targets (detectors take lists, sizes may differ)."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


__all__ = ["CocoDetection", "collate", "find_split", "resolve_image_path"]
