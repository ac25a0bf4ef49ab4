"""The context-reliance test: does a detection's score follow a change of context?

Input: the ``context_val2017.json`` records of :mod:`enl_experiments.context_dataset`
(for each validation image, the small objects whose class only context
decides, with their label in the scene and in its counterfactual twin) and a
model's COCO detections on the scenes and on the twins. An object's *score*
in an image is the highest score among the detections of its category whose
box overlaps its box with IoU >= ``iou_threshold`` (0 when there is none).

An object whose label changes between scene and twin *flips* when its score
moves the way the new label demands, by at least ``MIN_CHANGE``: up when it
became annotated, down when it stopped being annotated. The *flip rate* is
the fraction of label-changing objects that flip; an unchanged score (say 0
in both) is no flip. The margin keeps a model whose score merely jitters
with any pixel change in its receptive field (half of such jitters point the
"right" way) from scoring a flip rate near 50%. A detector
that ignores context keeps every score (its input around the object is the
same up to far-away pixels) and has a flip rate near 0; one that follows the
rule has 1.

The margin does not remove jitter larger than itself, and a model whose
features reach the changed pixels (a non-local block does, at any distance)
has more of it. So every record also says whether its score moved *against*
the new label by the same margin, and :func:`flip_rate` reports that
*wrong-way rate* beside the flip rate: a model that follows the rule flips
more often than it moves the wrong way; one whose scores only jitter has the
two rates equal, however high they are. The *net flip rate* is their
difference.

Example:
    >>> records = flip_records(context, scene_detections, twin_detections)
    >>> flip_rate(records)["rate"]
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_IOU = 0.5
MIN_CHANGE = 0.05  # of a score in [0, 1]


def box_iou(box_a, box_b) -> float:
    """IoU of two COCO boxes (x, y, w, h)."""
    ax0, ay0, aw, ah = box_a
    bx0, by0, bw, bh = box_b
    width = min(ax0 + aw, bx0 + bw) - max(ax0, bx0)
    height = min(ay0 + ah, by0 + bh) - max(ay0, by0)
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / (aw * ah + bw * bh - inter)


def object_score(detections: list[dict], category_id: int, box,
                 iou_threshold: float = DEFAULT_IOU) -> float:
    """The best score of a ``category_id`` detection overlapping ``box`` (0 if none).

    Args:
        detections: one image's COCO results (``category_id``, ``bbox``, ``score``).
        category_id: the object's candidate class.
        box: its box (x, y, w, h).
        iou_threshold: the overlap that counts as the same object.
    """
    scores = [d["score"] for d in detections
              if d["category_id"] == category_id and box_iou(d["bbox"], box) >= iou_threshold]
    return float(max(scores, default=0.0))


def _by_image(detections: list[dict]) -> dict[int, list[dict]]:
    grouped: dict[int, list[dict]] = {}
    for detection in detections:
        grouped.setdefault(int(detection["image_id"]), []).append(detection)
    return grouped


def flip_records(context: dict, scene_detections: list[dict], twin_detections: list[dict],
                 iou_threshold: float = DEFAULT_IOU, labels: str = "label",
                 min_change: float = MIN_CHANGE) -> list[dict]:
    """One record per context-dependent object whose label changes in the twin.

    Args:
        context: the ``context_val2017.json`` document (``{"images": [...]}``).
        scene_detections, twin_detections: the model's COCO results on the
            validation scenes and on their twins (same image ids).
        iou_threshold: see :func:`object_score`.
        labels: ``"label"`` (the split's labels, ``label_original`` /
            ``label_twin``) or ``"rule"`` (the context rule's, ``rule_*``: in
            the control split, where labels ignore context, how much a model
            follows the rule anyway).
        min_change: the least score change in the demanded direction that
            counts as a flip (>= 0).

    Returns:
        ``[{"image_id", "uid", "category_id", "distance", "direction" (+1: the
        object became annotated, -1: it stopped), "score_original",
        "score_twin", "flipped", "against"}]``; ``against``: the score moved
        the other way by at least ``min_change``.

    Raises:
        ValueError: naming `labels`, `iou_threshold` or `min_change` and the value received.
    """
    if not (isinstance(min_change, (int, float)) and 0.0 <= min_change < 1.0):
        raise ValueError(f"`min_change` must be in [0, 1), received {min_change!r}")
    _check_labels(labels)
    if not (isinstance(iou_threshold, (int, float)) and 0.0 < iou_threshold <= 1.0):
        raise ValueError(f"`iou_threshold` must be in (0, 1], received {iou_threshold!r}")
    scenes, twins = _by_image(scene_detections), _by_image(twin_detections)
    records = []
    for image in context["images"]:
        image_id = int(image["image_id"])
        for obj in image["objects"]:
            before, after = obj[f"{labels}_original"], obj[f"{labels}_twin"]
            if before == after:
                continue
            score_original = object_score(scenes.get(image_id, []), obj["category_id"],
                                          obj["bbox"], iou_threshold)
            score_twin = object_score(twins.get(image_id, []), obj["category_id"], obj["bbox"],
                                      iou_threshold)
            direction = 1 if after else -1
            moved = direction * (score_twin - score_original)
            large = abs(score_twin - score_original) >= min_change
            records.append({"image_id": image_id, "uid": obj["uid"],
                            "category_id": obj["category_id"], "distance": obj["distance"],
                            "direction": direction, "score_original": score_original,
                            "score_twin": score_twin,
                            "flipped": moved > 0 and large, "against": moved < 0 and large})
    return records


def flip_rate(records: list[dict]) -> dict:
    """``{"rate", "n", "flipped", "against", "against_rate"}`` over ``records``.

    ``rate`` = flipped / n and ``against_rate`` = against / n (the wrong-way
    rate, the module docstring); both None when there are no records.
    """
    flipped = sum(bool(r["flipped"]) for r in records)
    against = sum(bool(r["against"]) for r in records)
    n = len(records)
    return {"rate": flipped / n if n else None, "n": n, "flipped": flipped,
            "against": against, "against_rate": against / n if n else None}


def per_category(records: list[dict], names: dict[int, str]) -> dict[str, dict]:
    """:func:`flip_rate` of each category in ``names`` (id -> name)."""
    return {name: flip_rate([r for r in records if r["category_id"] == category_id])
            for category_id, name in names.items()}


def by_distance(records: list[dict], edges) -> list[dict]:
    """:func:`flip_rate` in distance bins ``[edges[i], edges[i + 1])`` (the last one closed).

    Returns:
        ``[{"low", "high", **flip_rate(...)}]``, one per bin.

    Raises:
        ValueError: fewer than two edges, or edges not increasing.
    """
    return [{"low": low, "high": high, **flip_rate([r for r in records
                                                   if inside(r["distance"])])}
            for low, high, inside in _distance_bins(edges)]


def _distance_bins(edges) -> list[tuple[float, float, object]]:
    """``(low, high, inside)`` per bin ``[low, high)``, the last one closed.

    Raises:
        ValueError: fewer than two edges, or edges not increasing.
    """
    edges = [float(e) for e in edges]
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        raise ValueError(f"`edges` must be >= 2 increasing numbers, received {edges!r}")
    last = len(edges) - 2
    return [(low, high, lambda d, low=low, high=high, closed=index == last:
             low <= d < high or (closed and d == high))
            for index, (low, high) in enumerate(zip(edges, edges[1:], strict=False))]


def distance_edges(width: int, count: int = 6) -> list[float]:
    """``count`` equal distance bins from 0 to the largest distance a strip allows."""
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"`count` must be an int >= 1, received {count!r}")
    return [float(v) for v in np.linspace(0.0, math.ceil(width), count + 1)]


# What context is worth on the scenes themselves (no twins): every small object
# of a validation image, annotated or a look-alike, as written by
# ``enl_experiments.context_dataset.small_objects``, grouped by image id.

def _check_labels(labels: str) -> None:
    if labels not in ("label", "rule"):
        raise ValueError(f"`labels` must be 'label' or 'rule', received {labels!r}")


def score_auc(objects: dict[int, list[dict]], detections: list[dict], labels: str = "label",
              iou_threshold: float = DEFAULT_IOU) -> dict[int, dict]:
    """How well a model's scores tell annotated small objects from their look-alikes.

    Each object gets its :func:`object_score`; per category, the AUC is the
    probability that an annotated object scores above a look-alike (ties count
    half). Every look-alike looks like an annotated object locally, so a model
    that ignores context has an AUC near 0.5; one that follows the labels, 1.

    Args:
        objects: ``{image_id: [{"category_id", "bbox", "label", "rule"}]}``.
        detections: the model's COCO results on those images.
        labels: ``"label"`` (the split's) or ``"rule"`` (the context rule's).
        iou_threshold: see :func:`object_score`.

    Returns:
        ``{category_id: {"auc" (None without both kinds), "annotated", "lookalike"}}``.
    """
    _check_labels(labels)
    grouped = _by_image(detections)
    scores: dict[int, dict[bool, list[float]]] = {}
    for image_id, entries in objects.items():
        for obj in entries:
            score = object_score(grouped.get(int(image_id), []), obj["category_id"],
                                 obj["bbox"], iou_threshold)
            scores.setdefault(obj["category_id"], {True: [], False: []})[
                bool(obj[labels])].append(score)
    return {category_id: {"auc": _auc(split[True], split[False]),
                          "annotated": len(split[True]), "lookalike": len(split[False])}
            for category_id, split in sorted(scores.items())}


def _auc(positive, negative) -> float | None:
    """P(a positive scores above a negative), ties half; None without both."""
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    if not (positive.size and negative.size):
        return None
    above = (positive[:, None] > negative[None, :]).mean()
    tied = (positive[:, None] == negative[None, :]).mean()
    return float(above + 0.5 * tied)


def auc_by_distance(objects: dict[int, list[dict]], detections: list[dict], edges,
                    iou_threshold: float = DEFAULT_IOU) -> dict[int, list[dict]]:
    """:func:`score_auc` against the context rule, split by the distance to what decides.

    In bin ``[edges[i], edges[i + 1])`` (the last one closed), the AUC is the
    probability that an object the rule annotates, whose deciding object
    (``decider_distance``: the person in its colour, the other square of its
    colour) lies at that distance, scores above a look-alike of its category
    (all of them: a look-alike has no deciding object). A model that uses
    context only as far as it sees rises above 0.5 at short distances first.
    On the context split the rule's labels are the labels.

    Returns:
        ``{category_id: [{"low", "high", "auc" (None without both kinds),
        "annotated", "lookalike"}]}``.

    Raises:
        ValueError: fewer than two edges, or edges not increasing; an object
            the rule annotates without a ``decider_distance``.
    """
    bins = _distance_bins(edges)
    grouped = _by_image(detections)
    positives: dict[int, list[tuple[float, float]]] = {}
    negatives: dict[int, list[float]] = {}
    for image_id, entries in objects.items():
        for obj in entries:
            score = object_score(grouped.get(int(image_id), []), obj["category_id"],
                                 obj["bbox"], iou_threshold)
            positives.setdefault(obj["category_id"], [])
            negatives.setdefault(obj["category_id"], [])
            if not obj["rule"]:
                negatives[obj["category_id"]].append(score)
                continue
            if obj.get("decider_distance") is None:
                raise ValueError(f"object {obj.get('uid')!r} of image {image_id} is annotated "
                                 "by the rule but has no `decider_distance`, received "
                                 f"{obj.get('decider_distance')!r}")
            positives[obj["category_id"]].append((float(obj["decider_distance"]), score))
    result = {}
    for category_id in sorted(positives):
        result[category_id] = []
        for low, high, inside in bins:
            scores = [s for d, s in positives[category_id] if inside(d)]
            result[category_id].append({
                "low": low, "high": high, "auc": _auc(scores, negatives[category_id]),
                "annotated": len(scores), "lookalike": len(negatives[category_id])})
    return result


def perfect_context(objects: dict[int, list[dict]], detections: list[dict],
                    iou_threshold: float = DEFAULT_IOU) -> list[dict]:
    """A model's detections as they would be with perfect use of context.

    A detection whose best-overlapping small object of its own category (IoU
    >= ``iou_threshold``) is an unannotated look-alike is dropped; every other
    detection (persons, annotated objects, boxes on nothing) is kept as it is.
    Its AP is what this model's localisation would score if its classifier
    followed the labels exactly.
    """
    grouped: dict[int, list[dict]] = {int(k): v for k, v in objects.items()}
    kept = []
    for detection in detections:
        best, best_iou = None, iou_threshold
        for obj in grouped.get(int(detection["image_id"]), []):
            if obj["category_id"] != detection["category_id"]:
                continue
            overlap = box_iou(detection["bbox"], obj["bbox"])
            if overlap >= best_iou:
                best, best_iou = obj, overlap
        if best is None or best["label"]:
            kept.append(detection)
    return kept


def context_blind_detections(objects: dict[int, list[dict]], rng: np.random.Generator
                             ) -> list[dict]:
    """Every small object boxed exactly, with a random score (uniform, i.i.d.).

    Locally every look-alike looks like an annotated object, so any detector
    that ignores context ranks them independently of their labels; with exact
    boxes and every object found, its expected AP is the AP of these
    detections averaged over draws: the AP that ignoring context allows.
    """
    return [{"image_id": int(image_id), "category_id": obj["category_id"],
             "bbox": list(obj["bbox"]), "score": float(rng.random())}
            for image_id, entries in sorted(objects.items()) for obj in entries]
