"""COCO evaluation of torchvision detectors with pycocotools.

Each rank predicts its share of the images; rank 0 gathers the detections and
scores them with :func:`enl_core.coco.evaluate_with_summary` (the scoring every
framework shares) for boxes and, for Mask R-CNN, masks: AP (IoU 0.50:0.95),
AP50, AP75, APs, APm, APl (small < 32^2 <= medium < 96^2 <= large) and AP per
category, in percent; None where COCO defines none (e.g. no ground truth of
that size).
"""

from __future__ import annotations

from typing import Any

import torch

from enl_core.coco import encode_mask, evaluate_with_summary
from enl_torch.data.coco import CocoDetection, collate
from enl_torch.training.distributed import DistributedContext, all_gather_objects

MASK_THRESHOLD = 0.5


def detections_to_coco(outputs: list[dict[str, torch.Tensor]], image_ids: list[int],
                       label_to_category: dict[int, int]) -> list[dict[str, Any]]:
    """torchvision detections -> COCO result entries (what :func:`enl_core.coco.evaluate` reads).

    Boxes become ``bbox`` ``[x, y, w, h]``; masks (probabilities), when the
    model returns them, are thresholded at 0.5 and RLE-encoded as ``segmentation``.
    """
    results: list[dict[str, Any]] = []
    for output, image_id in zip(outputs, image_ids, strict=True):
        boxes = output["boxes"].detach().cpu().double()
        boxes[:, 2:] -= boxes[:, :2]  # xyxy -> xywh
        scores = output["scores"].detach().cpu().tolist()
        labels = output["labels"].detach().cpu().tolist()
        masks = None
        if "masks" in output:
            masks = (output["masks"][:, 0] > MASK_THRESHOLD).cpu().numpy()
        for k, (box, score, label) in enumerate(zip(boxes.tolist(), scores, labels, strict=True)):
            entry = {"image_id": int(image_id), "category_id": label_to_category[int(label)],
                     "score": float(score), "bbox": [float(v) for v in box]}
            if masks is not None:
                entry["segmentation"] = encode_mask(masks[k])
            results.append(entry)
    return results


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
    local: list[dict[str, Any]] = []
    has_masks = False
    for start in range(0, len(indices), batch_size):
        images, targets = collate([dataset[i] for i in indices[start:start + batch_size]])
        outputs = model([image.to(context.device) for image in images])
        has_masks = has_masks or any("masks" in output for output in outputs)
        image_ids = [int(target["image_id"]) for target in targets]
        local.extend(detections_to_coco(outputs, image_ids, dataset.label_to_category))
    model.train(was_training)
    gathered = all_gather_objects((local, has_masks), context)
    if not context.is_main:
        return {}, ""
    has_masks = any(flag for _, flag in gathered)
    image_ids = list(dataset.image_ids)
    results = [entry for part, _ in gathered for entry in part]
    iou_types = ("bbox", "segm") if has_masks else ("bbox",)
    scores, summaries = evaluate_with_summary(dataset.coco, results, iou_types, image_ids)
    metrics: dict[str, Any] = {"num_images": len(image_ids), **scores,
                               "num_detections": len(results)}
    return metrics, "".join(f"{iou_type}:\n{summaries[iou_type]}" for iou_type in iou_types)
