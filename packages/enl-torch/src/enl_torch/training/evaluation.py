"""COCO evaluation of torchvision detectors with pycocotools.

Each rank predicts its share of the images; rank 0 gathers the detections and
runs ``COCOeval`` for boxes and, for Mask R-CNN, masks. The metrics are the
first six of ``COCOeval.stats``: AP (IoU 0.50:0.95), AP50, AP75, APs, APm,
APl (small < 32^2 <= medium < 96^2 <= large); -1 where COCO defines none
(e.g. no ground truth of that size).
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from enl_torch.data.coco import CocoDetection, collate
from enl_torch.training.distributed import DistributedContext, all_gather_objects

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
MASK_THRESHOLD = 0.5


def detections_to_coco(outputs: list[dict[str, torch.Tensor]], image_ids: list[int],
                       label_to_category: dict[int, int]) -> dict[str, list[dict[str, Any]]]:
    """torchvision detections -> COCO result entries ``{"bbox": [...], "segm": [...]}``.

    Boxes become ``[x, y, w, h]``; masks (probabilities) are thresholded at 0.5
    and RLE-encoded.
    """
    results: dict[str, list[dict[str, Any]]] = {"bbox": [], "segm": []}
    for output, image_id in zip(outputs, image_ids, strict=True):
        boxes = output["boxes"].detach().cpu().double()
        boxes[:, 2:] -= boxes[:, :2]  # xyxy -> xywh
        scores = output["scores"].detach().cpu().tolist()
        labels = output["labels"].detach().cpu().tolist()
        masks = None
        if "masks" in output:
            masks = (output["masks"][:, 0] > MASK_THRESHOLD).cpu().numpy().astype(np.uint8)
        for k, (box, score, label) in enumerate(zip(boxes.tolist(), scores, labels, strict=True)):
            entry = {"image_id": int(image_id), "category_id": label_to_category[int(label)],
                     "score": float(score)}
            results["bbox"].append({**entry, "bbox": [float(v) for v in box]})
            if masks is not None:
                rle = mask_utils.encode(np.asfortranarray(masks[k]))
                rle["counts"] = rle["counts"].decode("ascii")
                results["segm"].append({**entry, "segmentation": rle})
    return results


def _results_as_coco(ground_truth: COCO, results: list[dict[str, Any]], iou_type: str) -> COCO:
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            return ground_truth.loadRes(copy.deepcopy(results))
    # loadRes cannot take an empty list; no detections is a valid (AP 0) result.
    empty = COCO()
    empty.dataset = {"images": list(ground_truth.dataset["images"]),
                     "categories": copy.deepcopy(ground_truth.dataset["categories"]),
                     "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        empty.createIndex()
    return empty


def coco_metrics(ground_truth: COCO, results: list[dict[str, Any]], iou_type: str,
                 image_ids: list[int] | None = None) -> tuple[dict[str, float], str]:
    """Runs ``COCOeval``; returns the six metrics and the printed summary."""
    detections = _results_as_coco(ground_truth, results, iou_type)
    evaluator = COCOeval(ground_truth, detections, iou_type)
    if image_ids is not None:
        evaluator.params.imgIds = sorted(image_ids)
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats[:len(METRIC_NAMES)]
    metrics = {name: float(value) for name, value in zip(METRIC_NAMES, stats, strict=True)}
    return metrics, summary.getvalue()


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: CocoDetection, context: DistributedContext,
             batch_size: int = 1) -> tuple[dict[str, Any], str]:
    """Predicts ``dataset`` (sharded over ranks) and evaluates on rank 0.

    Returns:
        ``({"bbox": {...}, "segm": {...}, "num_images": n, "num_detections": d}, summary)``
        on rank 0 (``segm`` only for models returning masks); ``({}, "")`` on
        the other ranks.
    """
    was_training = model.training
    model.eval()
    indices = list(range(context.rank, len(dataset), context.world_size))
    local: dict[str, list[dict[str, Any]]] = {"bbox": [], "segm": []}
    has_masks = False
    for start in range(0, len(indices), batch_size):
        images, targets = collate([dataset[i] for i in indices[start:start + batch_size]])
        outputs = model([image.to(context.device) for image in images])
        has_masks = has_masks or any("masks" in output for output in outputs)
        image_ids = [int(target["image_id"]) for target in targets]
        converted = detections_to_coco(outputs, image_ids, dataset.label_to_category)
        for key in local:
            local[key].extend(converted[key])
    model.train(was_training)
    gathered = all_gather_objects((local, has_masks), context)
    if not context.is_main:
        return {}, ""
    has_masks = any(flag for _, flag in gathered)
    image_ids = list(dataset.image_ids)
    metrics: dict[str, Any] = {"num_images": len(image_ids)}
    summaries = []
    for iou_type in ("bbox", "segm") if has_masks else ("bbox",):
        results = [entry for part, _ in gathered for entry in part[iou_type]]
        metrics[iou_type], summary = coco_metrics(dataset.coco, results, iou_type, image_ids)
        summaries.append(f"{iou_type}:\n{summary}")
    metrics["num_detections"] = sum(len(part["bbox"]) for part, _ in gathered)
    return metrics, "".join(summaries)
