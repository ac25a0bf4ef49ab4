"""The embedded dataset: small objects that only context can tell apart.

A seeded generator of beach scenes in COCO format, designed around the claim of
Levi & Ullman (BMVC 2019, Sec. 1 and Fig. 1): small objects (area < 32^2) are
detected better when the detector can use (i) repeated instances of the same
class and (ii) larger related objects, "the tiny swimmers in the sea" near the
people on the shore and "the ball" near the player.

Every small object has a look-alike distractor rendered with the *same* code
and the *same* appearance distribution, so a detector that looks only at the
object's own pixels cannot tell them apart. Only context can:

- ``person`` (category 1, large): a figure standing on the sand, with a shirt
  colour drawn from ``PALETTE`` (distinct colours within an image).
- ``ball`` (category 2, small): a white disk of diameter 6-10 px held beside a
  person (within a quarter of the person's height of the torso, at arm
  height). Look-alike: identical white disks ("pebbles") lying on the sand at
  least half a person height away from every person.
- ``swimmer`` (category 3, small): a head (diameter 6-11 px) in the sea with a
  cap in the shirt colour of one of the people on the shore; swimmers come as a
  group of 3-6 near each other (repeated instances). Look-alike: identical
  heads ("buoys") whose cap colour matches no shirt in the image: 1-3 scattered
  singles, plus, with probability 0.3 (0.7 when nobody is on the shore), a
  group of 3-6 sharing one non-matching colour, so neither repetition alone nor
  colour alone decides; the relation to a large object does.

The ``control`` split draws the same scenes (same counts, sizes, colours and
rendering) but removes the information context carried: white disks are
placed on the sand independently of the people, cap colours are drawn
independently of the shirts, and whether a look-alike is annotated is a coin
flip per instance (``CONTROL_LABEL_RATE``), so no detector can beat one that
ignores context.

Masks are the polygons in the annotation file, rasterised with pycocotools
itself and painted into the image, so pixels, masks, areas and boxes agree
exactly. Objects never overlap (rejection sampling on padded boxes).

Example:
    >>> from enl_experiments.dataset import generate_dataset
    >>> paths = generate_dataset("data/beach", num_train=200, num_val=50, seed=0)
    >>> paths.val_annotations.name
    'instances_val2017.json'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import numbers
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from enl_core.coco import CocoPaths
from enl_core.validation import non_negative_int

CATEGORIES = (
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 2, "name": "ball", "supercategory": "sports"},
    {"id": 3, "name": "swimmer", "supercategory": "person"},
)
PERSON, BALL, SWIMMER = 1, 2, 3

SPLITS = ("context", "control")
IMAGE_FORMATS = ("png", "jpg")

# Shirt and cap colours: far from sea blue, sand and skin.
PALETTE = (
    (220, 30, 40),
    (30, 170, 60),
    (240, 220, 20),
    (150, 40, 190),
    (250, 120, 10),
    (20, 20, 20),
)
SKIN = (225, 170, 130)
BALL_WHITE = (245, 245, 240)
SEA = (40, 95, 160)
SAND = (205, 185, 140)
LEGS = (50, 50, 90)

# In the control split a look-alike is annotated with these probabilities,
# about the rates at which the context split annotates them.
CONTROL_LABEL_RATE = {BALL: 0.3, SWIMMER: 0.6}

_SMALL_RADIUS = {BALL: (3.0, 5.0), SWIMMER: (3.0, 5.5)}
_DISK_VERTICES = 16
_MAX_TRIES = 60


@dataclasses.dataclass
class _Instance:
    """One rendered shape: its annotation polygons and what to paint."""

    category_id: int | None  # None: an unannotated look-alike
    polygons: list[list[float]]
    paint: list[tuple[list[float], tuple[int, int, int]]]
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 (padded for overlap tests)


def disk_polygon(cx: float, cy: float, radius: float) -> list[float]:
    angles = np.linspace(0.0, 2.0 * math.pi, _DISK_VERTICES, endpoint=False)
    points = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)
    return [round(float(v), 2) for v in points.reshape(-1)]


def upper_half_disk_polygon(cx: float, cy: float, radius: float) -> list[float]:
    angles = np.linspace(math.pi, 2.0 * math.pi, _DISK_VERTICES // 2 + 1)
    points = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)
    return [round(float(v), 2) for v in points.reshape(-1)]


def rect_polygon(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [round(float(v), 2) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]


def _overlaps(box, boxes) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b in boxes)


def _inside(box, height: int, width: int) -> bool:
    return box[0] >= 1 and box[1] >= 1 and box[2] <= width - 1 and box[3] <= height - 1


class _Scene:
    """Samples one image's objects; ``split`` decides how labels follow context."""

    def __init__(self, rng: np.random.Generator, height: int, width: int, split: str):
        self.rng, self.height, self.width, self.split = rng, height, width, split
        self.horizon = float(rng.uniform(0.35, 0.5) * height)
        self.instances: list[_Instance] = []
        self.person_boxes: list[tuple[float, float, float, float]] = []
        self.shirts: list[tuple[int, int, int]] = []

    def _free(self, box) -> bool:
        return _inside(box, self.height, self.width) and not _overlaps(
            box, [inst.box for inst in self.instances])

    def add_person(self) -> None:
        rng, height = self.rng, self.height
        person_height = float(rng.uniform(0.28, 0.42) * height)
        half_width = 0.18 * person_height
        for _ in range(_MAX_TRIES):
            feet = float(rng.uniform(self.horizon + 0.5 * person_height, height - 2))
            cx = float(rng.uniform(half_width + 2, self.width - half_width - 2))
            top = feet - person_height
            box = (cx - half_width - 2, top - 2, cx + half_width + 2, feet + 2)
            if self._free(box):
                break
        else:
            return
        used = {PALETTE.index(c) for c in self.shirts}
        shirt = PALETTE[int(rng.choice([i for i in range(len(PALETTE)) if i not in used]))]
        head_r = 0.1 * person_height
        head = disk_polygon(cx, top + head_r, head_r)
        torso_top, torso_bottom = top + 1.8 * head_r, top + 0.6 * person_height
        torso = rect_polygon(cx - half_width, torso_top, cx + half_width, torso_bottom)
        leg_w = 0.12 * person_height
        left, right = cx - half_width + 1, cx + half_width - 1
        legs = [rect_polygon(left, torso_bottom - 1, left + leg_w, feet),
                rect_polygon(right - leg_w, torso_bottom - 1, right, feet)]
        paint = [(head, SKIN), (torso, shirt)] + [(leg, LEGS) for leg in legs]
        self.instances.append(_Instance(PERSON, [head, torso, *legs], paint, box))
        self.person_boxes.append(box)
        self.shirts.append(shirt)

    def _small(self, kind: int, cx: float, cy: float, radius: float, cap, label: bool) -> bool:
        box = (cx - radius - 2, cy - radius - 2, cx + radius + 2, cy + radius + 2)
        if not self._free(box):
            return False
        disk = disk_polygon(cx, cy, radius)
        if kind == BALL:
            paint = [(disk, BALL_WHITE)]
        else:
            paint = [(disk, SKIN), (upper_half_disk_polygon(cx, cy, radius), cap)]
        self.instances.append(_Instance(kind if label else None, [disk], paint, box))
        return True

    def _radius(self, kind: int) -> float:
        return float(self.rng.uniform(*_SMALL_RADIUS[kind]))

    def _label(self, kind: int, in_context: bool) -> bool:
        if self.split == "control":
            return bool(self.rng.random() < CONTROL_LABEL_RATE[kind])
        return in_context

    def add_ball(self, person_box) -> None:
        """A white disk at arm height beside ``person_box`` (the ball near the player)."""
        x0, y0, x1, y1 = person_box
        person_height = y1 - y0
        for _ in range(_MAX_TRIES):
            radius = self._radius(BALL)
            gap = float(self.rng.uniform(1.0, 0.25 * person_height))
            side = self.rng.choice([-1.0, 1.0])
            cx = x1 + gap + radius if side > 0 else x0 - gap - radius
            cy = float(self.rng.uniform(y0 + 0.2 * person_height, y0 + 0.6 * person_height))
            if self._small(BALL, cx, cy, radius, None, self._label(BALL, True)):
                return

    def _far_from_people(self, cx: float, cy: float) -> bool:
        for x0, y0, x1, y1 in self.person_boxes:
            margin = 0.5 * (y1 - y0)
            if x0 - margin < cx < x1 + margin and y0 - margin < cy < y1 + margin:
                return False
        return True

    def add_pebble(self, near_people_allowed: bool) -> None:
        """A white disk lying on the sand (away from people unless allowed)."""
        for _ in range(_MAX_TRIES):
            radius = self._radius(BALL)
            cx = float(self.rng.uniform(radius + 3, self.width - radius - 3))
            cy = float(self.rng.uniform(self.horizon + radius + 3, self.height - radius - 3))
            if not near_people_allowed and not self._far_from_people(cx, cy):
                continue
            if self._small(BALL, cx, cy, radius, None, self._label(BALL, False)):
                return

    def add_heads(self, count: int, cap, in_context: bool, grouped: bool) -> None:
        """``count`` heads in the sea; grouped ones cluster around one anchor."""
        rng, spread = self.rng, 0.18 * self.width
        anchor = (float(rng.uniform(0, self.width)), float(rng.uniform(0, self.horizon)))
        for _ in range(count):
            for _ in range(_MAX_TRIES):
                radius = self._radius(SWIMMER)
                if grouped:
                    cx = anchor[0] + float(rng.uniform(-spread, spread))
                    cy = anchor[1] + float(rng.uniform(-0.5 * spread, 0.5 * spread))
                else:
                    cx = float(rng.uniform(0, self.width))
                    cy = float(rng.uniform(0, self.horizon))
                if cy + radius + 2 > self.horizon:
                    continue
                colour = cap() if callable(cap) else cap
                if self._small(SWIMMER, cx, cy, radius, colour, self._label(SWIMMER, in_context)):
                    break

    def sample(self) -> None:
        rng = self.rng
        for _ in range(int(rng.choice(4, p=[0.2, 0.35, 0.3, 0.15]))):
            self.add_person()
        people = list(self.person_boxes)
        control = self.split == "control"
        # Balls beside people; in the control split the same number of white
        # disks is placed anywhere on the sand instead.
        num_balls = sum(bool(rng.random() < 0.6) for _ in people)
        for person_box in people[:num_balls]:
            if control:
                self.add_pebble(near_people_allowed=True)
            else:
                self.add_ball(person_box)
        for _ in range(int(rng.integers(1, 5))):
            self.add_pebble(near_people_allowed=control)
        others = [c for c in PALETTE if c not in self.shirts]

        def any_colour():
            return PALETTE[int(rng.integers(len(PALETTE)))]

        def other_colour():
            return others[int(rng.integers(len(others)))]

        if people:
            cap = any_colour() if control else self.shirts[int(rng.integers(len(self.shirts)))]
            self.add_heads(int(rng.integers(3, 7)), cap, True, grouped=True)
        if rng.random() < (0.3 if people else 0.7):
            cap = any_colour() if control else other_colour()
            self.add_heads(int(rng.integers(3, 7)), cap, False, grouped=True)
        self.add_heads(int(rng.integers(1, 4)), any_colour if control else other_colour,
                       False, grouped=False)


def _background(rng: np.random.Generator, height: int, width: int, horizon: float) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    phase = float(rng.uniform(0, 2 * math.pi))
    waves = 10.0 * np.sin(2 * math.pi * ys / 9.0 + 0.6 * np.sin(xs / 17.0 + phase))
    sea = np.asarray(SEA, np.float64) + waves[..., None] * np.array([0.6, 0.8, 1.0])
    sand = np.asarray(SAND, np.float64) + rng.normal(0, 8, size=(height, width, 1))
    image = np.where((ys < horizon)[..., None], sea, sand)
    return image


def polygon_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    with warnings.catch_warnings():
        # pycocotools passes copy=False to numpy 2's __array__; harmless.
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def coco_annotation(category_id: int, polygons: list[list[float]], height: int,
                    width: int) -> dict:
    """A COCO annotation (without ids) whose area and box are those of the rasterised mask."""
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    return {"category_id": category_id, "segmentation": polygons,
            "area": float(mask_utils.area(rle)),
            "bbox": [float(v) for v in mask_utils.toBbox(rle)], "iscrowd": 0}


def render_image(seed_sequence, height: int, width: int, split: str):
    """Samples and renders one scene.

    Args:
        seed_sequence: anything ``np.random.default_rng`` accepts; the image is a
            pure function of it.
        height, width: image size in pixels.
        split: "context" or "control".

    Returns:
        ``(image, annotations)``: a (height, width, 3) uint8 array and a list of
        dicts with ``category_id``, ``segmentation`` (polygons), ``area`` and
        ``bbox`` (x, y, w, h) computed from the rasterised mask.
    """
    rng = np.random.default_rng(seed_sequence)
    scene = _Scene(rng, height, width, split)
    scene.sample()
    image = _background(rng, height, width, scene.horizon)
    annotations = []
    for instance in scene.instances:
        for polygon, colour in instance.paint:
            mask = polygon_mask([polygon], height, width)
            shading = rng.normal(0, 6, size=(int(mask.sum()), 3))
            image[mask] = np.asarray(colour, np.float64) + shading
        if instance.category_id is None:
            continue
        annotations.append(coco_annotation(instance.category_id, instance.polygons, height,
                                           width))
    # Sensor noise over everything, so no colour is exactly constant.
    image = image + rng.normal(0, 4, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), annotations


def image_size_pair(image_size) -> tuple[int, int]:
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2
            or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in image_size)
            or any(v < 64 or v % 64 for v in image_size)):
        raise ValueError(f"`image_size` must be an int or a pair (height, width) of positive "
                         f"multiples of 64, received {image_size!r}")
    return int(image_size[0]), int(image_size[1])


def write_coco_split(root: Path, subset: str, num_images: int, height: int, width: int,
                     render, info: dict, categories, image_format: str = "png",
                     progress: bool = False) -> Path:
    """Renders ``num_images`` images with ``render(index)`` and writes them as one COCO split.

    Args:
        root: the dataset folder; images go to ``{subset}2017/``, annotations to
            ``annotations/instances_{subset}2017.json``.
        render: ``index -> (uint8 image, [annotation without ids])``.
        info: the JSON's ``info`` entry.
        categories: the JSON's categories.

    Returns:
        The annotation file's path. Image ids are ``index + 1``.
    """
    image_dir = root / f"{subset}2017"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    indices = range(num_images)
    if progress:
        from tqdm import tqdm
        indices = tqdm(indices, desc=f"{info.get('split', '')} {subset}", unit="img",
                       leave=False)
    for index in indices:
        image_id = index + 1
        pixels, objects = render(index)
        file_name = f"{image_id:012d}.{image_format}"
        save_kwargs = {"quality": 95} if image_format == "jpg" else {}
        Image.fromarray(pixels).save(image_dir / file_name, **save_kwargs)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for obj in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **obj})
    document = {"info": info, "licenses": [], "images": images, "annotations": annotations,
                "categories": [dict(c) for c in categories]}
    annotation_dir = root / "annotations"
    annotation_dir.mkdir(parents=True, exist_ok=True)
    path = annotation_dir / f"instances_{subset}2017.json"
    path.write_text(json.dumps(document))
    return path


def check_dataset_args(num_train, num_val, image_size, seed, split, image_format):
    """The arguments every embedded dataset generator takes, checked.

    Returns:
        ``(num_train, num_val, (height, width), seed)``.

    Raises:
        ValueError / TypeError: naming the argument and the value received.
    """
    num_train = non_negative_int("num_train", num_train)
    num_val = non_negative_int("num_val", num_val)
    size = image_size_pair(image_size)
    seed = non_negative_int("seed", seed)
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, received {split!r}")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"`image_format` must be one of {IMAGE_FORMATS}, "
                         f"received {image_format!r}")
    return num_train, num_val, size, seed


def generate_dataset(root, num_train: int = 200, num_val: int = 50, image_size=(256, 256),
                     seed: int = 0, split: str = "context", image_format: str = "png",
                     progress: bool = False) -> CocoPaths:
    """Writes the embedded dataset in the COCO 2017 layout under ``root``.

    Args:
        root: output folder; gets ``train2017/``, ``val2017/`` and
            ``annotations/instances_{train,val}2017.json``.
        num_train, num_val: number of images per subset (>= 0).
        image_size: int or (height, width), multiples of 64 (Model Garden's
            input constraint).
        seed: the dataset is a pure function of (seed, split, subset, index);
            train and val never share an image.
        split: "context" (labels follow context, see the module docstring) or
            "control" (context carries no information).
        image_format: "png" (lossless, default) or "jpg".
        progress: show a tqdm bar per subset.

    Returns:
        :class:`enl_core.coco.CocoPaths` of the dataset (COCO 2017 layout).

    Raises:
        ValueError / TypeError: naming the argument and the value received.

    Example:
        >>> paths = generate_dataset("/tmp/beach", num_train=8, num_val=4, image_size=128)
    """
    num_train, num_val, (height, width), seed = check_dataset_args(
        num_train, num_val, image_size, seed, split, image_format)
    root = Path(root)
    info = {"description": f"enl embedded small-objects dataset, split={split}",
            "version": "1", "seed": seed, "split": split}
    paths = []
    for subset_code, (subset, count) in enumerate((("train", num_train), ("val", num_val))):
        def render(index, subset_code=subset_code):
            return render_image([seed, SPLITS.index(split), subset_code, index], height, width,
                                split)

        paths.append(write_coco_split(root, subset, count, height, width, render, info,
                                      CATEGORIES, image_format, progress))
    train, val = paths
    return CocoPaths(root, root / "train2017", root / "val2017", train, val)


def dataset_cli(argv, *, prog: str, description: str, num_train: int, num_val: int,
                image_size: list, size_nargs, size_help: str, generate) -> int:
    """The command line both embedded datasets share: parse, generate, report.

    ``generate(args)`` writes the dataset from the parsed arguments and returns
    its paths (any object with ``*_annotations`` fields); a bad value it
    refuses (TypeError / ValueError) is printed and exits 2.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num-train", type=int, default=num_train)
    parser.add_argument("--num-val", type=int, default=num_val)
    parser.add_argument("--image-size", type=int, nargs=size_nargs, default=image_size,
                        help=size_help)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=SPLITS, default="context")
    parser.add_argument("--format", choices=IMAGE_FORMATS, default="png")
    args = parser.parse_args(argv)
    try:
        paths = generate(args)
    except (TypeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    written = [str(getattr(paths, field.name)) for field in dataclasses.fields(paths)
               if field.name.endswith("_annotations") and getattr(paths, field.name)]
    print(f"wrote {', '.join(written)}")
    return 0


def main(argv=None) -> int:
    def generate(args):
        size = args.image_size[0] if len(args.image_size) == 1 else tuple(args.image_size)
        return generate_dataset(args.out, args.num_train, args.num_val, size, args.seed,
                                args.split, args.format, progress=True)

    return dataset_cli(argv, prog="python -m enl_experiments.dataset",
                       description="Write the embedded small-objects-in-context dataset "
                                   "(COCO layout).",
                       num_train=200, num_val=50, image_size=[256, 256], size_nargs="+",
                       size_help="H W (or one value for square), multiples of 64",
                       generate=generate)


if __name__ == "__main__":
    sys.exit(main())
