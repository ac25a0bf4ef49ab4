"""COCO evaluation of a detector's results with pycocotools, the same for every framework.

Each framework's adapter writes its validation detections as a COCO results
list (``image_id``, ``category_id``, ``bbox`` as x, y, w, h in original image
pixels, ``score`` and, for masks, ``segmentation`` as RLE); this module scores
them against the annotation file with ``COCOeval`` exactly as the COCO
benchmark does, so the Model Garden and the torch runs are measured by one
piece of code.

Numbers are in percent, like the paper's Tables 1 and 2. A metric whose area
range holds no ground truth (COCO's -1) is ``None``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
IOU_TYPES = ("bbox", "segm")


def load_detections(path) -> list[dict]:
    """Reads a COCO results JSON list; RLE ``counts`` stay as str."""
    detections = json.loads(Path(path).read_text())
    if not isinstance(detections, list):
        raise ValueError(f"`path` must hold a JSON list of detections, received "
                         f"{type(detections).__name__} in {path}")
    return detections


def _results(ground_truth: COCO, detections: list[dict], iou_type: str) -> COCO:
    """A results COCO object for one IoU type (also when there are no detections)."""
    if detections:
        if iou_type == "bbox":
            detections = [{k: v for k, v in d.items() if k != "segmentation"}
                          for d in detections]
        else:
            detections = [{k: v for k, v in d.items() if k != "bbox"} for d in detections]
        with contextlib.redirect_stdout(io.StringIO()):
            return ground_truth.loadRes(copy.deepcopy(detections))
    # loadRes cannot take an empty list; an empty results set scores 0 where
    # ground truth exists, which is the right answer for a detector that found nothing.
    results = COCO()
    results.dataset = {"images": list(ground_truth.dataset["images"]),
                       "categories": copy.deepcopy(ground_truth.dataset["categories"]),
                       "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        results.createIndex()
    return results


def _percent(value: float) -> float | None:
    return None if value < 0 else round(100.0 * float(value), 3)


def evaluate(annotation_file, detections, iou_types=IOU_TYPES) -> dict:
    """Scores ``detections`` with pycocotools' COCOeval.

    Args:
        annotation_file: the COCO instances JSON of the evaluated images.
        detections: a list of COCO result dicts, or a path to a JSON file of them.
        iou_types: any of "bbox", "segm"; "segm" needs ``segmentation`` in every
            detection.

    Returns:
        ``{iou_type: {"AP": .., "AP50": .., "AP75": .., "APs": .., "APm": ..,
        "APl": .., "per_category": {name: AP}}}`` in percent (None where the
        area range has no ground truth).

    Raises:
        ValueError: an unknown IoU type, or "segm" requested for detections
            without masks.

    Example:
        >>> evaluate("data/annotations/instances_val2017.json", "detections.json")["bbox"]["APs"]
    """
    if isinstance(detections, (str, Path)):
        detections = load_detections(detections)
    for iou_type in iou_types:
        if iou_type not in IOU_TYPES:
            raise ValueError(f"`iou_types` entries must be in {IOU_TYPES}, received {iou_type!r}")
        if iou_type == "segm" and any("segmentation" not in d for d in detections):
            raise ValueError("`iou_types` asks for 'segm' but some detections have no "
                             "'segmentation'")
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(annotation_file))
    image_ids = set(ground_truth.getImgIds())
    detections = [d for d in detections if d["image_id"] in image_ids]
    names = {c["id"]: c["name"] for c in ground_truth.loadCats(ground_truth.getCatIds())}
    report = {}
    for iou_type in iou_types:
        evaluator = COCOeval(ground_truth, _results(ground_truth, detections, iou_type), iou_type)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools x numpy 2
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        metrics = {name: _percent(value)
                   for name, value in zip(METRICS, evaluator.stats[:6], strict=True)}
        # precision: [IoU thresholds, recall points, categories, areas, max dets];
        # area "all" and 100 detections, as in stats[0].
        precision = evaluator.eval["precision"][:, :, :, 0, -1]
        per_category = {}
        for k, category_id in enumerate(evaluator.params.catIds):
            values = precision[:, :, k]
            values = values[values > -1]
            per_category[names[category_id]] = (_percent(float(np.mean(values)))
                                                if values.size else None)
        metrics["per_category"] = per_category
        report[iou_type] = metrics
    return report


def encode_mask(mask: np.ndarray) -> dict:
    """A binary (H, W) mask as a JSON-ready COCO RLE (``counts`` as str)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle
