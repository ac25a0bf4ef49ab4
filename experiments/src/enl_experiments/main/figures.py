"""The figures of a run: losses, AP bars, detections, ENL attention, DCT filters.

Every function takes plain data (lists, dicts, NumPy arrays, file paths),
writes one PNG with matplotlib's Agg backend and returns its path, so the
figures are produced the same way for the Model Garden and the torch runs.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on CI machines or servers

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402

from enl_core import dct  # noqa: E402
from enl_core.validation import DEFAULT_DCT_SIZE  # noqa: E402

MODEL_COLOURS = ("tab:blue", "tab:red", "tab:green", "tab:purple")
CLASS_COLOURS = ("tab:orange", "cyan", "magenta", "lime", "yellow", "tab:pink")
LOSS_TAGS = ("total_loss", "rpn_score_loss", "rpn_box_loss", "frcnn_cls_loss",
             "frcnn_box_loss", "mask_loss")


def _save(fig, path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def loss_curves(histories: dict[str, list[dict]], path, tags=LOSS_TAGS) -> Path:
    """Training losses over steps, one panel per loss, one colour per model.

    Args:
        histories: ``{model label: [per-seed {tag: {"step": [...], "value": [...]}}]}``.
        path: output PNG.
        tags: losses to draw; tags no run logged are skipped.
    """
    present = [t for t in tags if any(t in h for runs in histories.values() for h in runs)]
    if not present:
        raise ValueError(f"`histories` holds none of the loss tags {tags}")
    columns = min(3, len(present))
    rows = -(-len(present) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False,
                             constrained_layout=True)
    for ax, tag in zip(axes.flat, present, strict=False):
        for colour, (label, runs) in zip(MODEL_COLOURS, histories.items(), strict=False):
            for seed_index, history in enumerate(runs):
                if tag not in history:
                    continue
                series = history[tag]
                ax.plot(series["step"], series["value"], color=colour, alpha=0.85,
                        linewidth=1.2, label=label if seed_index == 0 else None)
        ax.set_title(tag)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if tag == "total_loss":
            ax.legend()
    for ax in list(axes.flat)[len(present):]:
        ax.axis("off")
    fig.suptitle("training losses")
    return _save(fig, path)


def ap_bars(aggregated: dict[str, dict], labels: dict[str, str], path) -> Path:
    """AP, APs and per-class AP, boxes and masks, models side by side (std as error bars).

    Args:
        aggregated: ``{model: enl_experiments.main.report.aggregate(...)}``.
        labels: legend label per model.
        path: output PNG.
    """
    models = list(aggregated)
    iou_types = [t for t in ("bbox", "segm") if t in aggregated[models[0]]]
    fig, axes = plt.subplots(1, len(iou_types), figsize=(6.5 * len(iou_types), 3.6),
                             squeeze=False)
    for ax, iou_type in zip(axes[0], iou_types, strict=True):
        first = aggregated[models[0]][iou_type]
        names = ["AP", "AP50", "APs"] + [f"AP[{c}]" for c in first["per_category"]]
        width = 0.8 / len(models)
        for m, model in enumerate(models):
            entry = aggregated[model][iou_type]
            stats = [entry["AP"], entry["AP50"], entry["APs"],
                     *entry["per_category"].values()]
            means = [s["mean"] if s["mean"] is not None else 0.0 for s in stats]
            errors = [s["std"] or 0.0 for s in stats]
            positions = np.arange(len(names)) + (m - (len(models) - 1) / 2) * width
            ax.bar(positions, means, width, yerr=errors, capsize=3,
                   color=MODEL_COLOURS[m % len(MODEL_COLOURS)], label=labels.get(model, model))
        ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
        ax.set_ylabel("percent")
        ax.set_title("boxes" if iou_type == "bbox" else "masks")
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
    return _save(fig, path)


def _draw_instances(ax, image, instances, names, score_threshold):
    ax.imshow(image)
    overlay = np.zeros((*image.shape[:2], 4))
    for instance in instances:
        score = instance.get("score", 1.0)
        if score < score_threshold:
            continue
        colour = matplotlib.colors.to_rgba(
            CLASS_COLOURS[(instance["category_id"] - 1) % len(CLASS_COLOURS)])
        segmentation = instance.get("segmentation")
        if segmentation is not None:
            if isinstance(segmentation, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, *image.shape[:2]))
            else:
                rle = dict(segmentation)
                if isinstance(rle["counts"], str):
                    rle["counts"] = rle["counts"].encode("ascii")
            mask = mask_utils.decode(rle).astype(bool)
            overlay[mask] = (*colour[:3], 0.45)
        x, y, w, h = instance["bbox"]
        ax.add_patch(matplotlib.patches.Rectangle((x - 0.5, y - 0.5), w, h, fill=False,
                                                  edgecolor=colour, linewidth=1.0))
        text = names.get(instance["category_id"], str(instance["category_id"]))
        if "score" in instance:
            text += f" {score:.2f}"
        ax.text(x, y - 1, text, color=colour, fontsize=5, va="bottom")
    ax.imshow(overlay)
    ax.set_xticks([])
    ax.set_yticks([])


def detections_grid(images: list[tuple[int, Path]], ground_truth: dict[int, list[dict]],
                    detections: dict[str, list[dict]], names: dict[int, str], path,
                    score_threshold: float = 0.5) -> Path:
    """Validation images: ground truth, then each model's detections (score >= threshold).

    Args:
        images: ``[(image_id, image file)]``, one row each.
        ground_truth: ``{image_id: [COCO annotations]}``.
        detections: ``{model label: [COCO results]}`` (boxes and optional RLE masks).
        names: category id -> name.
        path: output PNG.
        score_threshold: detections below it are not drawn.
    """
    columns = 1 + len(detections)
    fig, axes = plt.subplots(len(images), columns, figsize=(3.2 * columns, 3.2 * len(images)),
                             squeeze=False)
    by_image = {label: {} for label in detections}
    for label, results in detections.items():
        for result in results:
            by_image[label].setdefault(result["image_id"], []).append(result)
    for row, (image_id, image_path) in enumerate(images):
        pixels = np.asarray(Image.open(image_path).convert("RGB"))
        _draw_instances(axes[row, 0], pixels, ground_truth.get(image_id, []), names, 0.0)
        axes[row, 0].set_title(f"image {image_id}: ground truth", fontsize=8)
        for column, label in enumerate(detections, start=1):
            _draw_instances(axes[row, column], pixels, by_image[label].get(image_id, []), names,
                            score_threshold)
            axes[row, column].set_title(f"{label} (score >= {score_threshold})", fontsize=8)
    return _save(fig, path)


def attention_figure(image_path, query_xy: tuple[float, float], maps: dict[int, np.ndarray],
                     path, title: str = "ENL attention of the query pixel") -> Path:
    """Where one pixel draws information from, at every ENL block (the paper's Fig. 1).

    Args:
        image_path: the validation image.
        query_xy: the query pixel (x, y) in image coordinates, marked with a cross.
        maps: ``{level: (h, w) map}``: the row of F + L for the query position
            at that level (e.g. from ``ENL.attention_map``).
        path: output PNG.
    """
    pixels = np.asarray(Image.open(image_path).convert("RGB"))
    height, width = pixels.shape[:2]
    levels = sorted(maps, reverse=True)
    fig, axes = plt.subplots(1, 1 + len(levels), figsize=(3.2 * (1 + len(levels)), 3.4),
                             squeeze=False)
    axes[0, 0].imshow(pixels)
    axes[0, 0].plot(*query_xy, marker="+", color="red", markersize=14, markeredgewidth=2)
    axes[0, 0].set_title("image and query", fontsize=9)
    for ax, level in zip(axes[0, 1:], levels, strict=True):
        attention = np.asarray(maps[level], dtype=np.float64)
        ax.imshow(pixels)
        ax.imshow(attention, cmap="inferno", alpha=0.6, extent=(-0.5, width - 0.5, height - 0.5,
                                                                -0.5), interpolation="nearest")
        ax.plot(*query_xy, marker="+", color="cyan", markersize=12, markeredgewidth=2)
        ax.set_title(f"P{level} ({attention.shape[0]}x{attention.shape[1]})", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def dct_filters(path, grid: tuple[int, int] = (32, 32), positions=((8, 8), (20, 26)),
                dct_size=DEFAULT_DCT_SIZE,
                dct_weights: dict[str, np.ndarray] | None = None) -> Path:
    """The spatial filters that rows of L = E-hat E-hat^T apply (the paper's Fig. 3 d, e).

    Args:
        path: output PNG.
        grid: (H, W) of the feature map.
        positions: query positions (row, col); one panel each.
        dct_size: the low DCT frequencies kept.
        dct_weights: optional ``{label: (kH, kW) d}`` (e.g. learned weights of
            trained blocks); one extra row of panels each. None: only the
            paper's all-ones d.
    """
    rows = {"d = 1 (paper)": None, **(dct_weights or {})}
    fig, axes = plt.subplots(len(rows), len(positions),
                             figsize=(3.2 * len(positions), 3.0 * len(rows)), squeeze=False)
    for r, (label, weights) in enumerate(rows.items()):
        for c, position in enumerate(positions):
            kernel = dct.position_filter(grid[0], grid[1], position, dct_size, weights)
            image = axes[r, c].imshow(kernel, cmap="RdBu_r",
                                      vmin=-np.abs(kernel).max(), vmax=np.abs(kernel).max())
            axes[r, c].plot(position[1], position[0], marker="+", color="black", markersize=10)
            axes[r, c].set_title(f"{label}: row of L at {tuple(position)}", fontsize=8)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            fig.colorbar(image, ax=axes[r, c], fraction=0.046)
    fig.suptitle(f"DCT position filters, {grid[0]}x{grid[1]} grid, dct_size={tuple(dct_size)}",
                 fontsize=10)
    return _save(fig, path)


def rate_axis_top(curves: dict[str, dict]) -> float:
    """The top of context_reach's y axis: the highest rate drawn (its spread and the
    wrong-way rates included) plus a margin, at least 10% and at most 102%, so that
    rates of a few percent are readable and 100% still fits."""
    drawn = [0.0]
    for curve in curves.values():
        for rate, std in zip(curve["rate"], curve["std"], strict=True):
            if rate is not None:
                drawn.append(rate + (std or 0.0))
        drawn += [a for a in curve.get("against") or [] if a is not None]
    return float(min(102.0, max(10.0, 1.15 * max(drawn))))


def context_reach(curves: dict[str, dict], path, reach: float | None = None) -> Path:
    """Flip rate against the distance to the deciding object, one curve per model.

    Args:
        curves: ``{model label: {"distance": [...], "rate": [...] (percent, None
            where a bin is empty), "std": [...] (None: one seed), "n": [...],
            "against": [...] (optional: the wrong-way rates, drawn dashed in the
            model's colour; None entries skipped)}}``.
        path: output PNG.
        reach: the baseline's theoretical reach in pixels, drawn as a vertical line.
    """
    if not curves:
        raise ValueError("`curves` must hold at least one model, received {}")
    fig, ax = plt.subplots(figsize=(6.0, 3.6), constrained_layout=True)
    for colour, (label, curve) in zip(MODEL_COLOURS, curves.items(), strict=False):
        points = [(d, r, s) for d, r, s in zip(curve["distance"], curve["rate"], curve["std"],
                                               strict=True) if r is not None]
        if not points:
            continue
        distance, rate, std = zip(*points, strict=True)
        ax.plot(distance, rate, marker="o", color=colour, label=label)
        if any(s is not None for s in std):
            spread = np.array([s or 0.0 for s in std])
            ax.fill_between(distance, np.array(rate) - spread, np.array(rate) + spread,
                            color=colour, alpha=0.15)
        wrong = [(d, a) for d, a in zip(curve["distance"], curve.get("against") or
                                        [None] * len(curve["distance"]), strict=True)
                 if a is not None]
        if wrong:
            ax.plot(*zip(*wrong, strict=True), marker="x", linestyle="--", color=colour,
                    label=f"{label}: wrong way")
    if reach is not None:
        ax.axvline(reach, color="grey", linestyle="--", linewidth=1.0,
                   label="baseline's theoretical reach")
    ax.set_xlabel("distance to the changed object (px)")
    ax.set_ylabel("flip rate (%); dashed: wrong-way rate")
    top = rate_axis_top(curves)
    ax.set_ylim(-top / 50, top)
    ax.set_title("context reach: scores that follow a change of context")
    ax.legend(fontsize=8)
    return _save(fig, path)
