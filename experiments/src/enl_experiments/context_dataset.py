"""The ``strip`` dataset: small objects whose class is decided by an object far away.

A seeded generator of wide strips (64 x 512 px by default) of plain, noisy
sand in COCO format, built so that context is long-range and necessary
(Levi & Ullman, BMVC 2019, Sec. 1: small objects are detected with the help
of larger related objects and of repeated instances). The rules, fixed before
any model was compared (README, main-job section):

- ``person`` (category 1, large, 0.62-0.88 of the strip's height): a figure
  with a shirt colour from ``CAP_PALETTE``, 1 or 2 per strip (distinct colours).
- ``swimmer`` (category 2, small): a head (radius 3-5 px) with a cap colour.
  It is a swimmer when some person in the strip wears that colour (relation
  (i): a large related object makes the small one likely), otherwise an
  unannotated look-alike. For every person there is one group of 1-2 heads in
  the shirt's colour and one group of 1-2 heads in a colour nobody wears, so
  swimmers and look-alikes have the same counts, group sizes and colour
  multiplicity.
- ``buoy`` (category 3, small): a square (side 6-10 px) in a colour from
  ``BUOY_PALETTE``. It is a buoy when another square of its colour is in the
  strip (relation (ii): repeated instances), otherwise an unannotated single.
  1-2 pairs and 1-2 singles per strip, all in distinct colours.
- Every small object is at least ``MIN_CONTEXT_DISTANCE`` px (horizontally)
  from every person and from the other square of its colour, and at least
  ``MIN_SEPARATION`` px from every other small object, whatever its label: the
  object's own pixels and its neighbourhood have the same statistics for both
  labels, and what decides sits up to the strip's width away.

The ``control`` split draws the same scenes (the layout does not depend on the
split) and labels each small object with a fair coin of its own, so context
carries no information about the label.

Counterfactual twins (``twins=True``): every validation scene also exists as a
twin made by :func:`intervene` (recolour a person's shirt to the colour of a
look-alike group, remove a person, or recolour one square of a pair to the
colour of a single), rendered by the same :func:`render_layout` with the same
noise, and labelled by the same rule, so that only the context changed. The
file ``annotations/context_val2017.json`` lists, per image, the intervention
and every context-dependent small object with its label in the scene and in
the twin and its distance to the changed object (the input of
:mod:`enl_experiments.main.flip_rate`).

Example:
    >>> from enl_experiments.context_dataset import generate_dataset
    >>> paths = generate_dataset("data/strip", num_train=8, num_val=4, seed=0)
    >>> paths.twin_annotations.name
    'instances_twin2017.json'
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np

from enl_experiments.dataset import (
    LEGS,
    PALETTE,
    SAND,
    SKIN,
    SPLITS,
    check_dataset_args,
    coco_annotation,
    dataset_cli,
    disk_polygon,
    polygon_mask,
    rect_polygon,
    upper_half_disk_polygon,
    write_coco_split,
)

CATEGORIES = (
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 2, "name": "swimmer", "supercategory": "person"},
    {"id": 3, "name": "buoy", "supercategory": "outdoor"},
)
PERSON, SWIMMER, BUOY = 1, 2, 3
CONTEXT_CATEGORIES = (SWIMMER, BUOY)  # the small classes only context decides
INTERVENTIONS = ("recolour_person", "remove_person", "recolour_buoy")

CAP_PALETTE = PALETTE  # shirts and caps
BUOY_PALETTE = ((0, 200, 200), (255, 105, 180), (140, 90, 40), (235, 235, 235), (0, 0, 140),
                (190, 250, 110))
MIN_CONTEXT_DISTANCE = 48.0
MIN_SEPARATION = 20.0
CONTROL_LABEL_RATE = 0.5
_HEAD_RADIUS = (3.0, 5.0)
_BUOY_SIDE = (6.0, 10.0)
_MAX_TRIES = 200
_KIND_CATEGORY = {"person": PERSON, "head": SWIMMER, "buoy": BUOY}


@dataclasses.dataclass(frozen=True)
class DatasetPaths:
    """Where :func:`generate_dataset` wrote a dataset (COCO 2017 layout plus the twins)."""

    root: Path
    train_images: Path
    val_images: Path
    train_annotations: Path
    val_annotations: Path
    twin_images: Path | None
    twin_annotations: Path | None
    context: Path | None  # annotations/context_val2017.json


def _place_person(rng, layout, height, width) -> None:
    person_height = float(rng.uniform(0.62, 0.88) * height)
    half_width = 0.18 * person_height
    for _ in range(_MAX_TRIES):
        cx = float(rng.uniform(half_width + 2, width - half_width - 2))
        if all(abs(cx - p["cx"]) > half_width + p["half_width"] + 16 for p in layout["person"]):
            break
    else:
        return
    layout["person"].append({"cx": cx, "cy": height - 2 - person_height / 2,
                             "height": person_height, "half_width": half_width})


def _place_small(rng, layout, kind, colour, height, width, partner_x=None) -> None:
    size = float(rng.uniform(*(_HEAD_RADIUS if kind == "head" else _BUOY_SIDE)))
    half = size if kind == "head" else size / 2
    for _ in range(_MAX_TRIES):
        cx = float(rng.uniform(half + 2, width - half - 2))
        cy = float(rng.uniform(half + 2, height - half - 2))
        if any(abs(cx - p["cx"]) < MIN_CONTEXT_DISTANCE for p in layout["person"]):
            continue
        if partner_x is not None and abs(cx - partner_x) < MIN_CONTEXT_DISTANCE:
            continue
        if any(math.hypot(cx - o["cx"], cy - o["cy"]) < MIN_SEPARATION
               for o in layout["head"] + layout["buoy"]):
            continue
        layout[kind].append({"cx": cx, "cy": cy, "size": size, "colour": int(colour)})
        return


def sample_layout(rng: np.random.Generator, height: int, width: int) -> dict:
    """One strip's objects: ``{"person": [...], "head": [...], "buoy": [...]}``.

    Each object is a dict with its centre (``cx``, ``cy``), size and colour
    index (``colour``; persons: ``shirt``) and a ``uid`` unique in the scene,
    which keys its rendering noise. A small object whose placement fails
    (rejection sampling) is left out; its labels come from what was placed.
    """
    layout: dict[str, list[dict]] = {"person": [], "head": [], "buoy": []}
    for _ in range(int(rng.integers(1, 3))):
        _place_person(rng, layout, height, width)
    colours = rng.permutation(len(CAP_PALETTE))
    people = len(layout["person"])
    for person, shirt in zip(layout["person"], colours[:people], strict=True):
        person["shirt"] = int(shirt)
    # One head group in each shirt's colour, one in a colour nobody wears per person.
    for colour in colours[:2 * people]:
        for _ in range(int(rng.integers(1, 3))):
            _place_small(rng, layout, "head", colour, height, width)
    num_pairs, num_singles = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    buoy_colours = rng.permutation(len(BUOY_PALETTE))[:num_pairs + num_singles]
    for index, colour in enumerate(buoy_colours):
        _place_small(rng, layout, "buoy", colour, height, width)
        if index < num_pairs and layout["buoy"] and layout["buoy"][-1]["colour"] == colour:
            _place_small(rng, layout, "buoy", colour, height, width,
                         partner_x=layout["buoy"][-1]["cx"])
    uid = 0
    for kind in ("person", "head", "buoy"):
        for obj in layout[kind]:
            obj["uid"] = uid
            uid += 1
    return layout


def context_labels(layout: dict) -> dict[int, bool]:
    """The generative rule: ``{uid: annotated?}`` for every small object.

    A head is a swimmer when a person wears its cap colour; a square is a buoy
    when another square has its colour.
    """
    shirts = {p["shirt"] for p in layout["person"]}
    labels = {h["uid"]: h["colour"] in shirts for h in layout["head"]}
    for buoy in layout["buoy"]:
        labels[buoy["uid"]] = any(o["colour"] == buoy["colour"] and o["uid"] != buoy["uid"]
                                  for o in layout["buoy"])
    return labels


def control_labels(layout: dict, key) -> dict[int, bool]:
    """A fair coin per small object, keyed by its uid (so a twin keeps its labels)."""
    return {obj["uid"]: bool(np.random.default_rng([*key, 7, obj["uid"]]).random()
                             < CONTROL_LABEL_RATE)
            for obj in layout["head"] + layout["buoy"]}


def intervene(layout: dict, rng: np.random.Generator) -> tuple[dict, dict]:
    """The counterfactual twin of ``layout``: one change of context.

    One of :data:`INTERVENTIONS`, drawn uniformly among those the scene
    allows: recolour a person's shirt (to the colour of a look-alike head
    group when there is one), remove a person, or recolour one square of a
    pair (to the colour of a single square when there is one).

    Returns:
        ``(twin layout, {"type", "uid", "cx", "cy"})``: the changed object's
        uid and centre (in the original scene).

    Raises:
        ValueError: a layout with neither persons nor pairs of squares.
    """
    twin = copy.deepcopy(layout)
    labels = context_labels(layout)
    pairs = [b for b in twin["buoy"] if labels[b["uid"]]]
    allowed = [name for name, possible in zip(
        INTERVENTIONS, (bool(twin["person"]), bool(twin["person"]), bool(pairs)), strict=True)
        if possible]
    if not allowed:
        raise ValueError("`layout` has no person and no pair of squares to intervene on")
    kind = allowed[int(rng.integers(len(allowed)))]
    if kind == "recolour_buoy":
        target = pairs[int(rng.integers(len(pairs)))]
        singles = sorted({b["colour"] for b in twin["buoy"] if not labels[b["uid"]]})
        unused = sorted(set(range(len(BUOY_PALETTE))) - {b["colour"] for b in twin["buoy"]})
        choices = singles or unused
        target["colour"] = int(choices[int(rng.integers(len(choices)))])
    else:
        target = twin["person"][int(rng.integers(len(twin["person"])))]
        if kind == "remove_person":
            twin["person"] = [p for p in twin["person"] if p is not target]
        else:
            shirts = {p["shirt"] for p in twin["person"]}
            others = sorted({h["colour"] for h in twin["head"]} - shirts)
            unused = sorted(set(range(len(CAP_PALETTE))) - shirts)
            choices = others or unused
            target["shirt"] = int(choices[int(rng.integers(len(choices)))])
    return twin, {"type": kind, "uid": target["uid"], "cx": target["cx"], "cy": target["cy"]}


def _shapes(obj: dict, kind: str) -> list[tuple[list[float], tuple[int, int, int]]]:
    """The polygons an object is painted with, each with its colour (first: the outline)."""
    cx, cy = obj["cx"], obj["cy"]
    if kind == "head":
        disk = disk_polygon(cx, cy, obj["size"])
        return [(disk, SKIN), (upper_half_disk_polygon(cx, cy, obj["size"]),
                               CAP_PALETTE[obj["colour"]])]
    if kind == "buoy":
        half = obj["size"] / 2
        return [(rect_polygon(cx - half, cy - half, cx + half, cy + half),
                 BUOY_PALETTE[obj["colour"]])]
    height, half_width = obj["height"], obj["half_width"]
    top, feet = cy - height / 2, cy + height / 2
    head_r = 0.1 * height
    torso_top, torso_bottom = top + 1.8 * head_r, top + 0.6 * height
    leg_w = 0.12 * height
    left, right = cx - half_width + 1, cx + half_width - 1
    return [(disk_polygon(cx, top + head_r, head_r), SKIN),
            (rect_polygon(cx - half_width, torso_top, cx + half_width, torso_bottom),
             CAP_PALETTE[obj["shirt"]]),
            (rect_polygon(left, torso_bottom - 1, left + leg_w, feet), LEGS),
            (rect_polygon(right - leg_w, torso_bottom - 1, right, feet), LEGS)]


def render_layout(layout: dict, labels: dict[int, bool], key, height: int, width: int):
    """Paints a layout; the noise is keyed by ``key`` and each object's uid.

    The background and sensor noise depend on ``key`` only and each object's
    shading on ``(key, uid)``, so a twin differs from its scene only where an
    object changed.

    Returns:
        ``(uint8 image, annotations, {uid: annotation index or None})``.
    """
    background = np.random.default_rng([*key, 0])
    image = np.asarray(SAND, np.float64) + background.normal(0, 8, size=(height, width, 1))
    sensor = background.normal(0, 4, size=(height, width, 3))
    annotations, index_of = [], {}
    for kind in ("person", "head", "buoy"):
        for obj in layout[kind]:
            shading = np.random.default_rng([*key, 1, obj["uid"]])
            shapes = _shapes(obj, kind)
            for polygon, colour in shapes:
                mask = polygon_mask([polygon], height, width)
                noise = shading.normal(0, 6, size=(height, width, 3))
                image[mask] = np.asarray(colour, np.float64) + noise[mask]
            annotated = kind == "person" or labels[obj["uid"]]
            index_of[obj["uid"]] = len(annotations) if annotated else None
            if annotated:
                polygons = [shapes[0][0]] if kind != "person" else [p for p, _ in shapes]
                annotations.append(coco_annotation(_KIND_CATEGORY[kind], polygons, height,
                                                   width))
    image = image + sensor
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), annotations, index_of


def _small_box(obj: dict, kind: str, height: int, width: int) -> list[float]:
    return coco_annotation(_KIND_CATEGORY[kind], [_shapes(obj, kind)[0][0]], height,
                           width)["bbox"]


def scene(seed: int, subset_code: int, index: int, height: int, width: int, split: str,
          twin: bool = False):
    """One image of the dataset (a pure function of its arguments).

    Args:
        seed, subset_code, index: the image's key (subset 0: train, 1: val).
        split: "context" (labels follow the rules) or "control" (coins).
        twin: render the counterfactual twin instead of the scene itself.

    Returns:
        ``(image, annotations, record)``; ``record`` (twins only, else None)
        is the image's entry of ``context_val2017.json``: the intervention and,
        for every small object present in both (the changed one excluded), its
        category, box, ``label_original``, ``label_twin`` (the split's labels),
        ``rule_original`` / ``rule_twin`` (the context rule's, equal to the
        labels in the context split) and ``distance`` (centre to centre, px) to
        the changed object.
    """
    key = [seed, subset_code, index]
    layout = sample_layout(np.random.default_rng(key), height, width)

    def labels_of(scene_layout):
        if split == "control":
            return control_labels(scene_layout, key)
        return context_labels(scene_layout)

    if not twin:
        image, annotations, _ = render_layout(layout, labels_of(layout), key, height, width)
        return image, annotations, None
    changed, intervention = intervene(layout, np.random.default_rng([*key, 2]))
    image, annotations, _ = render_layout(changed, labels_of(changed), key, height, width)
    before = _small_entries(layout, labels_of(layout), height, width)
    after = {entry["uid"]: entry for entry in _small_entries(changed, labels_of(changed),
                                                             height, width)}
    objects = []
    for entry in before:
        if entry["uid"] == intervention["uid"]:
            continue
        twin_entry = after[entry["uid"]]
        objects.append({
            "uid": entry["uid"], "category_id": entry["category_id"], "bbox": entry["bbox"],
            "label_original": entry["label"], "label_twin": twin_entry["label"],
            "rule_original": entry["rule"], "rule_twin": twin_entry["rule"],
            "distance": round(math.hypot(entry["cx"] - intervention["cx"],
                                         entry["cy"] - intervention["cy"]), 2)})
    return image, annotations, {"intervention": intervention, "objects": objects}


def decider_distances(layout: dict) -> dict[int, float | None]:
    """``{uid: distance}`` from every small object to what makes it annotated.

    Centre to centre (px) to the nearest object that the context rule needs:
    for a head, a person wearing its cap colour; for a square, another square
    of its colour. None for a look-alike (nothing decides it: the rule says
    so because no such object exists anywhere in the strip).
    """
    def nearest(obj, others):
        found = [math.hypot(obj["cx"] - o["cx"], obj["cy"] - o["cy"]) for o in others]
        return round(min(found), 2) if found else None

    distances = {h["uid"]: nearest(h, [p for p in layout["person"] if p["shirt"] == h["colour"]])
                 for h in layout["head"]}
    for buoy in layout["buoy"]:
        distances[buoy["uid"]] = nearest(buoy, [o for o in layout["buoy"] if o["uid"] != buoy[
            "uid"] and o["colour"] == buoy["colour"]])
    return distances


def _small_entries(layout: dict, labels: dict[int, bool], height: int, width: int) -> list[dict]:
    rules, deciders = context_labels(layout), decider_distances(layout)
    return [{"uid": obj["uid"], "category_id": _KIND_CATEGORY[kind],
             "bbox": _small_box(obj, kind, height, width), "label": labels[obj["uid"]],
             "rule": rules[obj["uid"]], "cx": obj["cx"], "cy": obj["cy"],
             "decider_distance": deciders[obj["uid"]]}
            for kind in ("head", "buoy") for obj in layout[kind]]


def small_objects(seed: int, subset_code: int, index: int, height: int, width: int,
                  split: str, twin: bool = False) -> list[dict]:
    """Every small object of one image, annotated or not (the look-alikes too).

    The same layout, intervention and labelling as :func:`scene` (without
    rendering), so the boxes are the annotations' boxes.

    Returns:
        ``[{"uid", "category_id" (the class it is or looks like), "bbox",
        "label" (annotated in this split), "rule" (the context rule's label),
        "cx", "cy", "decider_distance" (:func:`decider_distances`)}]``.

    Raises:
        ValueError: naming `split` and the value received.
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, received {split!r}")
    key = [seed, subset_code, index]
    layout = sample_layout(np.random.default_rng(key), height, width)
    if twin:
        layout, _ = intervene(layout, np.random.default_rng([*key, 2]))
    labels = (control_labels(layout, key) if split == "control" else context_labels(layout))
    return _small_entries(layout, labels, height, width)


def generate_dataset(root, num_train: int = 400, num_val: int = 100, image_size=(64, 512),
                     seed: int = 0, split: str = "context", twins: bool = True,
                     image_format: str = "png", progress: bool = False) -> DatasetPaths:
    """Writes the strip dataset in the COCO 2017 layout under ``root``.

    Args:
        root: output folder; gets ``train2017/``, ``val2017/``, ``twin2017/``
            (with ``twins``) and ``annotations/instances_{train,val,twin}2017.json``
            plus ``annotations/context_val2017.json``.
        num_train, num_val: images per subset (>= 0).
        image_size: (height, width) or an int, multiples of 64.
        seed: the dataset is a pure function of (seed, subset, index) and the
            split; the layouts do not depend on the split.
        split: "context" or "control" (see the module docstring).
        twins: also write the counterfactual twins of the validation images
            (same image ids, same file names).
        image_format: "png" (lossless) or "jpg".
        progress: tqdm bars.

    Returns:
        :class:`DatasetPaths`.

    Raises:
        ValueError / TypeError: naming the argument and the value received.
    """
    num_train, num_val, (height, width), seed = check_dataset_args(
        num_train, num_val, image_size, seed, split, image_format)
    if not isinstance(twins, bool):
        raise ValueError(f"`twins` must be a bool, received {twins!r}")
    root = Path(root)
    info = {"description": f"enl strip dataset (long-range context), split={split}",
            "version": "1", "seed": seed, "split": split, "design": "strip"}
    written = {}
    records = []
    for subset, subset_code, count, twin in (("train", 0, num_train, False),
                                             ("val", 1, num_val, False),
                                             ("twin", 1, num_val if twins else 0, True)):
        if subset == "twin" and not twins:
            continue

        def render(index, subset_code=subset_code, twin=twin):
            image, annotations, record = scene(seed, subset_code, index, height, width, split,
                                               twin)
            if record is not None:
                records.append({"image_id": index + 1, **record})
            return image, annotations

        written[subset] = write_coco_split(root, subset, count, height, width, render,
                                           {**info, "twins": twin}, CATEGORIES, image_format,
                                           progress)
    context = None
    if twins:
        context = root / "annotations" / "context_val2017.json"
        context.write_text(json.dumps({"info": info, "categories": list(CATEGORIES),
                                       "images": records}))
    return DatasetPaths(root, root / "train2017", root / "val2017", written["train"],
                        written["val"], root / "twin2017" if twins else None,
                        written.get("twin"), context)


def main(argv=None) -> int:
    def generate(args):
        return generate_dataset(args.out, args.num_train, args.num_val,
                                tuple(args.image_size), args.seed, args.split,
                                image_format=args.format, progress=True)

    return dataset_cli(argv, prog="python -m enl_experiments.context_dataset",
                       description="Write the strip dataset (long-range context, with "
                                   "twins; COCO layout).",
                       num_train=400, num_val=100, image_size=[64, 512], size_nargs=2,
                       size_help="H W", generate=generate)


if __name__ == "__main__":
    sys.exit(main())
