"""The main job's embedded datasets and its context-reliance evaluation.

Two dataset designs (``--dataset``): ``strip`` (:mod:`enl_experiments.context_dataset`,
the default: long-range context, counterfactual twins) and ``beach``
(:mod:`enl_experiments.dataset`, the first experiment's 128 px scenes). For a
dataset with twins, every model is also scored on the twins (COCO AP with the
twins' own labels) and by its flip rate (:mod:`enl_experiments.main.flip_rate`),
overall, per class and per distance to the changed object.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import yaml

from enl_core.coco import evaluate, load_detections
from enl_experiments import context_dataset, dataset
from enl_experiments.main import flip_rate, reach, report

DESIGNS = ("strip", "beach")
DISTANCE_BINS = 4
BLIND_DRAWS = 10  # random-score draws of the context-blind reference


def canvas(design: str, profile) -> tuple[int, int]:
    """(height, width) of the images of ``design`` under ``profile``.

    Raises:
        ValueError: naming `dataset` and the value received.
    """
    if design not in DESIGNS:
        raise ValueError(f"`dataset` must be one of {DESIGNS}, received {design!r}")
    if design == "strip":
        return tuple(profile.strip_size)
    return (profile.image_size, profile.image_size)


def dataset_name(design: str, split: str, profile, data_seed: int) -> str:
    """The cache folder's name: everything the images depend on."""
    height, width = canvas(design, profile)
    size = f"{height}px" if height == width else f"{height}x{width}px"
    return f"{design}-{split}-{size}-{profile.num_train}-{profile.num_val}-seed{data_seed}"


def labels_digest(paths) -> str:
    """sha256 of the validation annotations: the images' ids, sizes and boxes every
    score is computed against. A run records it (``meta.data_sha256``), so a
    re-scoring can tell the data it ran on from other data, whatever the folder
    is called."""
    return hashlib.sha256(Path(paths.val_annotations).read_bytes()).hexdigest()


def generate(design: str, root: Path, profile, split: str, data_seed: int) -> None:
    """Writes the ``design`` dataset of ``profile``'s size into ``root``."""
    size = canvas(design, profile)
    module = context_dataset if design == "strip" else dataset
    module.generate_dataset(root, num_train=profile.num_train, num_val=profile.num_val,
                            image_size=size, seed=data_seed, split=split, progress=True)


def with_twins(paths):
    """``paths`` (a ``runners.DataPaths``) with the image size and, if present, the twins.

    The image size is set when every image has the same size; the twins when
    ``twin2017/`` and ``annotations/instances_twin2017.json`` and
    ``annotations/context_val2017.json`` exist.
    """
    images = json.loads(paths.val_annotations.read_text())["images"]
    sizes = {(int(i["height"]), int(i["width"])) for i in images}
    image_size = next(iter(sizes)) if len(sizes) == 1 else None
    annotations = paths.root / "annotations"
    twin_annotations = annotations / "instances_twin2017.json"
    has_twins = ((paths.root / "twin2017").is_dir() and twin_annotations.exists()
                 and (annotations / "context_val2017.json").exists())
    return dataclasses.replace(
        paths, image_size=image_size,
        twin_images=paths.root / "twin2017" if has_twins else None,
        twin_annotations=twin_annotations if has_twins else None)


def context_document(paths) -> dict | None:
    """The ``context_val2017.json`` document of a dataset with twins (else None)."""
    if paths.twin_annotations is None:
        return None
    return json.loads((paths.root / "annotations" / "context_val2017.json").read_text())


SUBSET_CODES = {"train": 0, "val": 1}  # the generator's subset codes (context_dataset)


def small_objects(paths, subset: str = "val") -> dict[int, list[dict]] | None:
    """Every small object of one subset's scenes, look-alikes included, by image id.

    Rebuilt from the generator (a pure function of the seed, split and image
    index written in the annotations' ``info``) by
    :func:`enl_experiments.context_dataset.small_objects`; None for data
    that is not the strip design (the beach scenes, COCO).

    Args:
        paths: the dataset (``train_annotations`` / ``val_annotations``).
        subset: ``"val"`` (the scenes the main job scores) or ``"train"``.

    Raises:
        ValueError: naming `subset` and the value received.
    """
    if subset not in SUBSET_CODES:
        raise ValueError(f"`subset` must be one of {sorted(SUBSET_CODES)}, received {subset!r}")
    annotations = paths.val_annotations if subset == "val" else paths.train_annotations
    document = json.loads(annotations.read_text())
    info = document.get("info", {})
    if info.get("design") != "strip":
        return None
    return {int(image["id"]): context_dataset.small_objects(
                int(info["seed"]), SUBSET_CODES[subset], int(image["id"]) - 1,
                int(image["height"]), int(image["width"]), info["split"])
            for image in document["images"]}


def context_blind(paths, objects: dict[int, list[dict]], draws: int = BLIND_DRAWS) -> dict:
    """Box AP per context class of a detector that ignores context (mean ± std of draws).

    Every small object boxed exactly, random scores
    (:func:`enl_experiments.main.flip_rate.context_blind_detections`); draw
    ``k`` uses the generator seeded ``k``, so the reference repeats exactly.

    Returns:
        ``{class name: report.stats(...)}`` for the context classes.
    """
    if not isinstance(draws, int) or isinstance(draws, bool) or draws < 2:
        raise ValueError(f"`draws` must be an int >= 2, received {draws!r}")
    names = _context_names(paths)
    aps = [evaluate(paths.val_annotations,
                    flip_rate.context_blind_detections(objects, np.random.default_rng(draw)),
                    iou_types=("bbox",))["bbox"]["per_category"] for draw in range(draws)]
    return {name: report.stats([ap[name] for ap in aps]) for name in names.values()}


def _context_names(paths) -> dict[int, str]:
    categories = json.loads(paths.val_annotations.read_text())["categories"]
    return {c["id"]: c["name"] for c in categories
            if c["id"] in context_dataset.CONTEXT_CATEGORIES}


def context_worth(paths, objects: dict[int, list[dict]], detections: list[dict]) -> dict:
    """What one model makes of context on the validation scenes.

    Returns:
        ``{"ap": box AP per context class, "perfect": the same with perfect
        context on the model's own boxes (:func:`flip_rate.perfect_context`),
        "auc": score AUC annotated vs look-alike per class
        (:func:`flip_rate.score_auc`), "auc_rule": the same against the
        context rule's labels, "auc_distance": ``{class: [{"low", "high",
        "auc", "annotated", "lookalike"}]}``, the rule's AUC by the distance
        to the deciding object (:func:`flip_rate.auc_by_distance`, the flip
        rate's distance bins)}``; AP in percent, AUC as a fraction.
    """
    names = _context_names(paths)
    edges = flip_rate.distance_edges(_width(paths), DISTANCE_BINS)

    def box_ap(results):
        per_category = evaluate(paths.val_annotations, results,
                                iou_types=("bbox",))["bbox"]["per_category"]
        return {name: per_category[name] for name in names.values()}

    def auc(labels):
        found = flip_rate.score_auc(objects, detections, labels=labels)
        return {names[c]: entry["auc"] for c, entry in found.items() if c in names}

    by_distance = flip_rate.auc_by_distance(objects, detections, edges)
    return {"ap": box_ap(detections),
            "perfect": box_ap(flip_rate.perfect_context(objects, detections)),
            "auc": auc("label"), "auc_rule": auc("rule"),
            "auc_distance": {names[c]: bins for c, bins in by_distance.items() if c in names}}


def _width(paths) -> int:
    """The widest validation image (px): the distance bins run from 0 to it."""
    return max(int(i["width"]) for i in json.loads(paths.val_annotations.read_text())["images"])


def evaluate_context(paths, context: dict, run_dir: Path,
                     objects: dict[int, list[dict]] | None = None) -> dict:
    """One model's context-reliance numbers from its ``detections.json`` and ``twin/``.

    Args:
        objects: :func:`small_objects` of the data, for :func:`context_worth`
            (left out when None).

    Returns:
        ``{"twin": evaluate(...) on the twins, "flip": {"all": flip_rate,
        "per_category": {...}, "by_distance": [...]}, "flip_rule": the same
        with the context rule's labels, "worth": context_worth(...) (with
        ``objects``)}``.
    """
    scene = load_detections(run_dir / "detections.json")
    twin = load_detections(run_dir / "twin" / "detections.json")
    result = {"twin": evaluate(paths.twin_annotations, twin),
              **flip_results(paths, context, scene, twin)}
    if objects is not None:
        result["worth"] = context_worth(paths, objects, scene)
    return result


def flip_results(paths, context: dict, scene: list[dict], twin: list[dict]) -> dict:
    """One model's flip rates from its detections on the scenes and on their twins.

    Returns:
        ``{"flip": {"all": flip_rate, "per_category": {...}, "by_distance":
        [...]}, "flip_rule": the same with the context rule's labels}``
        (:mod:`enl_experiments.main.flip_rate`; each entry with its
        wrong-way rate).
    """
    edges = flip_rate.distance_edges(_width(paths), DISTANCE_BINS)
    names = {c["id"]: c["name"] for c in context["categories"]
             if c["id"] in context_dataset.CONTEXT_CATEGORIES}
    result = {}
    for key, labels in (("flip", "label"), ("flip_rule", "rule")):
        records = flip_rate.flip_records(context, scene, twin, labels=labels)
        result[key] = {"all": flip_rate.flip_rate(records),
                       "per_category": flip_rate.per_category(records, names),
                       "by_distance": flip_rate.by_distance(records, edges)}
    return result


def aggregate_flips(per_seed: list[dict], key: str = "flip") -> dict:
    """Mean and spread over seeds of the flip rates (in percent) of one model.

    Returns:
        ``{"all": stats, "against": stats, "net": stats, "per_category": {name:
        stats}, "per_category_against": {name: stats}, "by_distance": [{"low",
        "high", "n", **stats, "against": stats, "net": stats}]}``: ``against``
        is the wrong-way rate (:func:`enl_experiments.main.flip_rate.flip_rate`)
        and ``net`` the per-seed flip rate minus it; both have a None mean
        for results written before the wrong-way rate was kept. ``n`` sums
        the seeds' objects.
    """
    if not per_seed:
        raise ValueError("`per_seed` must hold at least one evaluation, received []")

    def percent(entry, rate="rate"):
        value = entry.get(rate)
        return None if value is None else 100.0 * value

    def net(entry):
        flipped, against = percent(entry), percent(entry, "against_rate")
        return None if flipped is None or against is None else flipped - against

    def three(pick):
        entries = [pick(run[key]) for run in per_seed]
        return {**report.stats([percent(e) for e in entries]),
                "against": report.stats([percent(e, "against_rate") for e in entries]),
                "net": report.stats([net(e) for e in entries])}

    first = per_seed[0][key]
    overall = three(lambda f: f["all"])
    per_category = {name: three(lambda f, name=name: f["per_category"][name])
                    for name in first["per_category"]}
    return {
        "all": {k: v for k, v in overall.items() if k not in ("against", "net")},
        "against": overall["against"], "net": overall["net"],
        "n": sum(run[key]["all"]["n"] for run in per_seed),
        "per_category": {name: {k: v for k, v in entry.items() if k not in ("against", "net")}
                         for name, entry in per_category.items()},
        "per_category_against": {name: entry["against"] for name, entry in per_category.items()},
        # "n" here counts the objects over the seeds (stats' own "n" counts seeds).
        "by_distance": [{**three(lambda f, i=i: f["by_distance"][i]),
                         "low": b["low"], "high": b["high"],
                         "n": sum(run[key]["by_distance"][i]["n"] for run in per_seed)}
                        for i, b in enumerate(first["by_distance"])],
    }


def flip_table(flips: dict[str, dict], labels: dict[str, str]) -> str:
    """Markdown: flip rates (percent) per model, overall, per class and per distance.

    Where the wrong-way rates are known, each cell is "flip rate / wrong-way
    rate" and a last row per distance bin gives the net rate.
    """
    models = list(flips)
    wrong_way = all(f["against"]["mean"] is not None for f in flips.values())
    title = "flip rate / wrong-way rate (%)" if wrong_way else "flip rate (%)"
    header = [title, *(labels[m] for m in models)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    first = flips[models[0]]
    rows = [("all", lambda f: (f["all"], f["against"]))]
    rows += [(name, lambda f, name=name: (f["per_category"][name],
                                          f["per_category_against"][name]))
             for name in first["per_category"]]
    rows += [(f"distance {b['low']:.0f}-{b['high']:.0f} px (n={b['n']})",
              lambda f, i=i: (f["by_distance"][i], f["by_distance"][i]["against"]))
             for i, b in enumerate(first["by_distance"])]
    for label, pick in rows:
        cells = [label]
        for model in models:
            flip, against = pick(flips[model])
            cells.append(f"{report.cell(flip)} / {report.cell(against)}" if wrong_way
                         else report.cell(flip))
        lines.append("| " + " | ".join(cells) + " |")
    if wrong_way:
        for index, b in enumerate(first["by_distance"]):
            cells = [f"net flip rate, {b['low']:.0f}-{b['high']:.0f} px",
                     *(report.cell(flips[m]["by_distance"][index]["net"]) for m in models)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def worth_table(context_results: dict[str, list[dict]], labels: dict[str, str],
                control: bool, blind: dict | None = None) -> str:
    """Markdown: the context-blind reference, then per model its box AP, its AP if its
    scores followed the labels (on the context split: perfect use of context) and its
    score AUC (percent; 50 = context ignored), per class."""
    models = list(context_results)
    names = list(context_results[models[0]][0]["worth"]["ap"])
    lines = ["| box AP / AUC (%) | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]

    def row(title, per_name):
        lines.append("| " + " | ".join([title, *(report.cell(per_name[n]) for n in names)])
                     + " |")

    if blind is not None:
        row(f"context-blind reference: every object boxed exactly, random scores "
            f"({blind[names[0]]['n']} draws)", blind)
    for model in models:
        worth = [run["worth"] for run in context_results[model]]

        def gather(key, scale=1.0, worth=worth):
            return {n: report.stats([None if w[key][n] is None else scale * w[key][n]
                                     for w in worth]) for n in names}

        row(f"{labels[model]}: box AP", gather("ap"))
        row(f"{labels[model]}: box AP if its scores followed the labels (look-alike "
            "detections dropped)", gather("perfect"))
        row(f"{labels[model]}: score AUC, annotated vs look-alike", gather("auc", 100.0))
        if control:
            row(f"{labels[model]}: score AUC against the context rule's labels",
                gather("auc_rule", 100.0))
    return "\n".join(lines)


def auc_distance_table(context_results: dict[str, list[dict]], labels: dict[str, str]) -> str:
    """Markdown: per class and distance bin, each model's score AUC (percent, mean ± std
    of seeds) of the objects whose deciding object lies at that distance against all
    look-alikes; ``n`` sums the annotated objects over the seeds."""
    models = list(context_results)
    first = context_results[models[0]][0]["worth"]["auc_distance"]
    header = ["score AUC (%) by distance to the deciding object", *(labels[m] for m in models)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, bins in first.items():
        for index, entry in enumerate(bins):
            count = sum(run["worth"]["auc_distance"][name][index]["annotated"]
                        for run in context_results[models[0]])
            cells = [report.cell(report.stats([
                None if run["worth"]["auc_distance"][name][index]["auc"] is None
                else 100.0 * run["worth"]["auc_distance"][name][index]["auc"]
                for run in context_results[model]])) for model in models]
            lines.append("| " + " | ".join([f"{name} {entry['low']:.0f}-{entry['high']:.0f} px "
                                            f"(n={count})", *cells]) + " |")
    return "\n".join(lines)


def context_sections(context_results: dict[str, list[dict]], labels: dict[str, str],
                     control: bool, blind: dict | None = None
                     ) -> tuple[list[tuple[str, str]], dict[str, dict]]:
    """The summary's context sections and the ``context_reach.png`` curves.

    Args:
        context_results: ``{model: [evaluate_context output per seed]}``.
        labels: column titles per model.
        control: a control-split run: its labels never change, so its curves
            are the flip rates against the context rule's labels.
        blind: :func:`context_blind` of the data (a row of the worth table).

    Returns:
        ``([(title, Markdown), ...], reach_curves(...))``.
    """
    models = list(context_results)
    twin_runs = {m: [r["twin"] for r in context_results[m]] for m in models}
    flips = {m: aggregate_flips(context_results[m]) for m in models}
    rule_flips = {m: aggregate_flips(context_results[m], "flip_rule") for m in models}
    sections = [
        ("Counterfactual twins: COCO metrics on the twins",
         report.comparison_table({m: report.aggregate(twin_runs[m]) for m in models}, labels)),
        ("Flip rate: label-changing objects whose score moved the way the new label "
         "demands (percent); after the slash the wrong-way rate, those whose score moved "
         "as far the other way (scores that only jitter give the two equal; the net rate "
         "is their difference)", flip_table(flips, labels))]
    if control:
        sections.append(("Control split: the same with the context rule's labels "
                         "(which the control labels ignore)", flip_table(rule_flips, labels)))
    if all("worth" in run for runs in context_results.values() for run in runs):
        sections.append(("What context is worth on the scenes: box AP of the context classes "
                         "and how well each model's scores tell them from look-alikes",
                         worth_table(context_results, labels, control, blind)))
    if all("auc_distance" in run.get("worth", {}) for runs in context_results.values()
           for run in runs):
        sections.append(("Score AUC by the distance to the deciding object (the context "
                         "rule's labels; 50 = context ignored at that distance)",
                         auc_distance_table(context_results, labels)))
    return sections, reach_curves(rule_flips if control else flips, labels)


def reach_curves(flips: dict[str, dict], labels: dict[str, str]) -> dict[str, dict]:
    """``{label: {"distance": bin centres, "rate": means, "std": spreads, "n": counts,
    "against": wrong-way means (None where unknown)}}``."""
    curves = {}
    for model, flip in flips.items():
        bins = flip["by_distance"]
        curves[labels[model]] = {"distance": [(b["low"] + b["high"]) / 2 for b in bins],
                                 "rate": [b["mean"] for b in bins],
                                 "std": [b["std"] for b in bins], "n": [b["n"] for b in bins],
                                 "against": [b["against"]["mean"] if "against" in b else None
                                             for b in bins]}
    return curves


def baseline_reach(profile, configs) -> float | None:
    """The theoretical reach (px) of the baseline's P2 RPN scores under ``profile``.

    Read from the backbone (``resnet.model_id``) and levels of the profile's
    shared garden YAML (:func:`enl_experiments.main.reach.theoretical_reach`);
    None when the profile has no shared YAML or another backbone type.
    """
    common = profile.garden_configs[0]
    if common is None:
        return None
    model = yaml.safe_load((configs / common).read_text())["task"]["model"]
    backbone = model.get("backbone", {})
    if backbone.get("type") != "resnet":
        return None
    levels = reach.theoretical_reach(backbone["resnet"]["model_id"], model["min_level"],
                                     model["max_level"])
    return levels[f"P{model['min_level']}"]["radius"]
