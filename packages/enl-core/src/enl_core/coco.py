"""COCO, once for every framework: folder layout, annotation checks, scoring.

The Model Garden converter, the torch dataset and the main job all read COCO
folders and score detections through this module, so they accept the same
folders, train on the same boxes and report the same numbers.

* Layout: :func:`find_split` (one split) and :func:`find_dataset` (train and
  val, as a :class:`CocoPaths`). A split ``s`` has its annotations in
  ``annotations/instances_<s>.json`` and its images in the first of ``<s>/``,
  ``images/<s>/``, ``images/``, the root folder that holds the first image of
  the JSON; a split named without the year (``train``) also finds the COCO
  2017 names (``train2017/``, ``instances_train2017.json``).
* Annotations (:func:`check_annotations`, run when a dataset is opened):
  malformed entries are an error that lists every offending image and
  annotation id: an image without a positive ``width`` / ``height``, an
  annotation of an unknown image or category, a ``bbox`` that is not four
  finite numbers or has a negative width or height. A well-formed box that
  covers less than :data:`MIN_BOX_SIZE` pixels in width or height once
  clamped to its image (zero-size boxes, which COCO 2017 itself holds, and
  boxes lying outside the image) cannot be a training target: it is dropped,
  and the drop is reported with its count and ids (a ``UserWarning`` and
  :attr:`AnnotationCheck.dropped`). Kept boxes are clamped to the image
  (:func:`clamp_box`) by every reader.
* Scoring (:func:`evaluate`): pycocotools' ``COCOeval``, exactly as the COCO
  benchmark. AP numbers are in **percent** (as the paper's Tables 1 and 2); a
  metric COCO cannot define (no ground truth in that area range, COCO's -1) is
  ``None``.

pycocotools is the optional extra ``enl-core[coco]``: importing ``enl_core``
never needs it; calling a function here that reads or scores COCO without it
raises ``ImportError`` naming ``pip install enl-core[coco]``.

Example:
    >>> paths = find_dataset("data/coco")  # doctest: +SKIP
    >>> evaluate(paths.val_annotations, "detections.json")["bbox"]["AP"]  # doctest: +SKIP
    37.4
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import math
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
IOU_TYPES = ("bbox", "segm")
MIN_BOX_SIZE = 1.0  # px: the smallest width and height of a training box, inside its image
_LISTED = 20  # ids named in one message; the count is always complete


def _pycocotools():
    """The pycocotools modules (``coco``, ``cocoeval``, ``mask``), or a clear ImportError."""
    try:
        from pycocotools import coco, cocoeval
        from pycocotools import mask as mask_utils
    except ImportError as error:
        raise ImportError("enl_core.coco needs pycocotools to read and score COCO: "
                          "pip install enl-core[coco]") from error
    return coco, cocoeval, mask_utils


# --------------------------------------------------------------------- layout

@dataclasses.dataclass(frozen=True)
class CocoPaths:
    """The train and validation splits of a COCO-layout folder."""

    root: Path
    train_images: Path
    val_images: Path
    train_annotations: Path
    val_annotations: Path


def _split_names(split: str) -> list[str]:
    return [split] if split.endswith("2017") else [split, f"{split}2017"]


def find_split(root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """``(images folder, annotation file)`` of one split (see the module docstring).

    Raises:
        ValueError: ``split`` is not a non-empty string.
        FileNotFoundError: naming what is missing: the annotation file (with
            the names looked for), the images folder (when none of the
            split's folders exists), or the first image file of the JSON
            (when folders exist but none holds it).
    """
    if not isinstance(split, str) or not split:
        raise ValueError(f"`split` must be a non-empty string, received {split!r}")
    root = Path(root)
    names = _split_names(split)
    annotation_files = [root / "annotations" / f"instances_{name}.json" for name in names]
    annotation_file = next((path for path in annotation_files if path.is_file()), None)
    if annotation_file is None:
        raise FileNotFoundError(f"no annotations for split {split!r} under {str(root)!r}: "
                                f"looked for {[str(p) for p in annotation_files]}")
    images = json.loads(annotation_file.read_text()).get("images", [])
    split_folders = [root / name for name in names] + [root / "images" / name for name in names]
    folders = [path for path in [*split_folders, root / "images", root] if path.is_dir()]
    if not images:
        return folders[0], annotation_file
    first = images[0].get("file_name")
    for folder in folders:
        if (folder / str(first)).is_file():
            return folder, annotation_file
    existing = [str(p) for p in split_folders if p.is_dir()]
    if not existing:
        raise FileNotFoundError(
            f"no images folder for split {split!r} under {str(root)!r}: none of "
            f"{[str(p) for p in split_folders]} exists (and {first!r}, the first image of "
            f"{str(annotation_file)!r}, is not in {[str(p) for p in folders]})")
    raise FileNotFoundError(
        f"image file {first!r} (image id {images[0].get('id')}, the first image of "
        f"{str(annotation_file)!r}) is missing: it is in none of {existing}")


def find_dataset(root: str | os.PathLike, train_split: str = "train2017",
                 val_split: str = "val2017") -> CocoPaths:
    """Both splits of a COCO-layout folder (:func:`find_split` for each).

    Raises:
        FileNotFoundError: as :func:`find_split`, naming the split.
    """
    root = Path(root)
    train_images, train_annotations = find_split(root, train_split)
    val_images, val_annotations = find_split(root, val_split)
    return CocoPaths(root, train_images, val_images, train_annotations, val_annotations)


# ---------------------------------------------------------------- annotations

@dataclasses.dataclass(frozen=True)
class AnnotationCheck:
    """What :func:`check_annotations` found in a valid document.

    Attributes:
        source: the file (or description) checked.
        total: number of annotations.
        dropped: ``{annotation id: (image id, reason)}`` of the boxes that
            are no training target (under ``MIN_BOX_SIZE`` inside the image).
    """

    source: str
    total: int
    dropped: dict[int, tuple[int, str]]

    def keeps(self, annotation: dict) -> bool:
        """Whether ``annotation`` is a training target (crowd or not)."""
        return annotation["id"] not in self.dropped


def _number(value) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, bool) and math.isfinite(value))


def _listed(entries: list[str]) -> str:
    shown = ", ".join(entries[:_LISTED])
    return shown + (f", ... ({len(entries) - _LISTED} more)" if len(entries) > _LISTED else "")


def clamp_box(bbox, width: float, height: float) -> list[float]:
    """A COCO ``[x, y, w, h]`` box clamped to a ``width`` x ``height`` image.

    The result satisfies ``x + w <= width`` and ``y + h <= height`` in floating
    point (readers that drop boxes crossing the border keep it).
    """
    x0, y0 = min(max(float(bbox[0]), 0.0), width), min(max(float(bbox[1]), 0.0), height)
    x1 = min(max(float(bbox[0]) + float(bbox[2]), 0.0), width)
    y1 = min(max(float(bbox[1]) + float(bbox[3]), 0.0), height)
    w, h = max(x1 - x0, 0.0), max(y1 - y0, 0.0)
    while x0 + w > width:
        w = float(np.nextafter(w, 0.0))
    while y0 + h > height:
        h = float(np.nextafter(h, 0.0))
    return [x0, y0, w, h]


def check_annotations(document: dict, source: str = "the annotations") -> AnnotationCheck:
    """Checks a COCO instances document (see the module docstring for the rules).

    Args:
        document: the parsed ``instances_*.json``.
        source: its file name, for the messages.

    Returns:
        :class:`AnnotationCheck`; a ``UserWarning`` names the dropped boxes.

    Raises:
        ValueError: listing every malformed image / annotation (ids and why).
    """
    problems: list[str] = []
    sizes = {}
    for image in document.get("images", []):
        width, height = image.get("width"), image.get("height")
        if not (_number(width) and _number(height) and width > 0 and height > 0):
            problems.append(f"image {image.get('id')!r}: width, height {width!r}, {height!r}")
        sizes[image.get("id")] = (width, height)
    categories = {category.get("id") for category in document.get("categories", [])}
    dropped: dict[int, tuple[int, str]] = {}
    annotations = document.get("annotations", [])
    for annotation in annotations:
        image_id, annotation_id = annotation.get("image_id"), annotation.get("id")
        where = f"image {image_id!r} annotation {annotation_id!r}"
        bbox = annotation.get("bbox")
        if image_id not in sizes:
            problems.append(f"{where}: no such image")
        elif annotation.get("category_id") not in categories:
            problems.append(f"{where}: unknown category_id {annotation.get('category_id')!r}")
        elif (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
              or not all(_number(v) for v in bbox)):
            problems.append(f"{where}: bbox must be four finite numbers [x, y, w, h], "
                            f"received {bbox!r}")
        elif bbox[2] < 0 or bbox[3] < 0:
            problems.append(f"{where}: bbox {list(bbox)} has a negative width or height")
        elif image_id in sizes and all(_number(v) for v in sizes[image_id]):
            _, _, w, h = clamp_box(bbox, *sizes[image_id])
            if w < MIN_BOX_SIZE or h < MIN_BOX_SIZE:
                inside = "outside the image" if w == 0 or h == 0 else "inside the image"
                reason = (f"bbox {list(bbox)} is {w:g} x {h:g} px {inside} "
                          f"{sizes[image_id][0]} x {sizes[image_id][1]}")
                dropped[annotation_id] = (image_id, reason)
    if problems:
        raise ValueError(f"{source}: {len(problems)} malformed entries: {_listed(problems)}")
    if dropped:
        named = [f"image {image} annotation {ann} ({reason})"
                 for ann, (image, reason) in dropped.items()]
        warnings.warn(f"{source}: dropped {len(dropped)} of {len(annotations)} boxes smaller "
                      f"than {MIN_BOX_SIZE:g} px inside their image: {_listed(named)}",
                      UserWarning, stacklevel=2)
    return AnnotationCheck(source, len(annotations), dropped)


def _read_coco(path: Path, dataset: dict):
    coco_module, _, _ = _pycocotools()
    ground_truth = coco_module.COCO()
    ground_truth.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints timings
        ground_truth.createIndex()
    return ground_truth


def load_coco(annotation_file: str | os.PathLike):
    """``(pycocotools COCO, AnnotationCheck)`` of an instances file: what a
    dataset reader opens, checked by :func:`check_annotations`.

    Raises:
        FileNotFoundError: naming ``annotation_file``.
        ValueError: malformed annotations (see :func:`check_annotations`).
        ImportError: pycocotools is not installed.
    """
    _pycocotools()
    path = Path(annotation_file)
    if not path.is_file():
        raise FileNotFoundError(f"`annotation_file` not found: {str(path)!r}")
    dataset = json.loads(path.read_text())
    check = check_annotations(dataset, str(path))
    return _read_coco(path, dataset), check


# -------------------------------------------------------------------- scoring

def load_detections(path: str | os.PathLike) -> list[dict]:
    """Reads a COCO results JSON list; RLE ``counts`` stay as str."""
    detections = json.loads(Path(path).read_text())
    if not isinstance(detections, list):
        raise ValueError(f"`path` must hold a JSON list of detections, received "
                         f"{type(detections).__name__} in {path}")
    return detections


def encode_mask(mask: np.ndarray) -> dict:
    """A binary (H, W) mask as a JSON-ready COCO RLE (``counts`` as str)."""
    _, _, mask_utils = _pycocotools()
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask).astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _results(ground_truth, detections: list[dict], iou_type: str):
    """A results COCO object for one IoU type (also when there are no detections)."""
    coco_module, _, _ = _pycocotools()
    if detections:
        other = "segmentation" if iou_type == "bbox" else "bbox"
        detections = [{k: v for k, v in d.items() if k != other} for d in detections]
        with contextlib.redirect_stdout(io.StringIO()):
            return ground_truth.loadRes(copy.deepcopy(detections))
    # loadRes cannot take an empty list; an empty results set scores 0 where
    # ground truth exists, which is the right answer for a detector that found nothing.
    results = coco_module.COCO()
    results.dataset = {"images": list(ground_truth.dataset["images"]),
                       "categories": copy.deepcopy(ground_truth.dataset["categories"]),
                       "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        results.createIndex()
    return results


def _percent(value: float) -> float | None:
    return None if value < 0 else round(100.0 * float(value), 3)


def evaluate_with_summary(ground_truth, detections, iou_types: Iterable[str] = IOU_TYPES,
                          image_ids: Iterable[int] | None = None) -> tuple[dict, dict[str, str]]:
    """:func:`evaluate`, and COCOeval's printed summary per IoU type."""
    _, cocoeval, _ = _pycocotools()
    if isinstance(detections, (str, os.PathLike)):
        detections = load_detections(detections)
    iou_types = tuple(iou_types)
    for iou_type in iou_types:
        if iou_type not in IOU_TYPES:
            raise ValueError(f"`iou_types` entries must be in {IOU_TYPES}, received {iou_type!r}")
        if iou_type == "segm" and any("segmentation" not in d for d in detections):
            raise ValueError("`iou_types` asks for 'segm' but some detections have no "
                             "'segmentation'")
    if isinstance(ground_truth, (str, os.PathLike)):
        # The ground truth as the COCO benchmark reads it: a tiny box is no
        # training target but is scored as COCO scores it.
        path = Path(ground_truth)
        ground_truth = _read_coco(path, json.loads(path.read_text()))
    evaluated = sorted(ground_truth.getImgIds() if image_ids is None else image_ids)
    unknown = sorted(set(evaluated) - set(ground_truth.getImgIds()))
    if unknown:
        raise ValueError(f"`image_ids` must be images of the ground truth, received unknown "
                         f"ids {unknown[:_LISTED]}")
    kept = set(evaluated)
    detections = [d for d in detections if d["image_id"] in kept]
    names = {c["id"]: c["name"] for c in ground_truth.loadCats(ground_truth.getCatIds())}
    report, summaries = {}, {}
    for iou_type in iou_types:
        evaluator = cocoeval.COCOeval(ground_truth, _results(ground_truth, detections, iou_type),
                                      iou_type)
        evaluator.params.imgIds = evaluated
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), warnings.catch_warnings():
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
        summaries[iou_type] = printed.getvalue()
    return report, summaries


def evaluate(ground_truth, detections, iou_types: Iterable[str] = IOU_TYPES,
             image_ids: Iterable[int] | None = None) -> dict:
    """Scores ``detections`` with pycocotools' COCOeval.

    Args:
        ground_truth: the COCO instances JSON of the evaluated images (a path),
            or a pycocotools ``COCO`` of it (e.g. the first of :func:`load_coco`).
        detections: a list of COCO result dicts (``image_id``,
            ``category_id``, ``score``, ``bbox`` as x, y, w, h in original image
            pixels and, for masks, ``segmentation`` as RLE), or a path to a
            JSON file of them.
        iou_types: any of "bbox", "segm"; "segm" needs ``segmentation`` in
            every detection.
        image_ids: the images to evaluate (default: every image of the ground
            truth); detections of other images are ignored.

    Returns:
        ``{iou_type: {"AP", "AP50", "AP75", "APs", "APm", "APl": percent or
        None, "per_category": {category name: AP percent or None}}}``.

    Raises:
        ValueError: an unknown IoU type or image id, or "segm" requested for
            detections without masks.
        ImportError: pycocotools is not installed.

    Example:
        >>> evaluate("annotations/instances_val2017.json", "detections.json")  # doctest: +SKIP
    """
    return evaluate_with_summary(ground_truth, detections, iou_types, image_ids)[0]


__all__ = ["IOU_TYPES", "METRICS", "MIN_BOX_SIZE", "AnnotationCheck", "CocoPaths",
           "check_annotations", "clamp_box", "encode_mask", "evaluate", "evaluate_with_summary",
           "find_dataset", "find_split", "load_coco", "load_detections"]
