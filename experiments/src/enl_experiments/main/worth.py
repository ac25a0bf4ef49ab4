"""``python -m enl_experiments.main.worth``: what context is worth, for finished runs.

Re-scores the validation detections that finished strip runs left in
``runs/<model>-seed<k>/detections.json`` (nothing is retrained): the
context-blind reference of the data, and per model its box AP on the
context classes, the AP its own boxes would score with perfect context, and
its score AUC between annotated objects and their look-alikes
(:func:`enl_experiments.main.context_eval.context_worth`); and, where every
run kept its twins' detections (``runs/<model>-seed<k>/twin/detections.json``),
the flip rates with their wrong-way rates
(:func:`enl_experiments.main.context_eval.flip_results`). New runs of the
main job put the same tables in their ``summary.md``; this is for runs made
before they did. Several runs (one per seed, same data) are aggregated as
mean ± std over their seeds.

Example::

    python -m enl_experiments.main.worth results/20261203-054758-garden-long-strip-control
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from enl_core.coco import find_dataset, load_detections
from enl_experiments.main import context_eval


def worth(runs: list[Path], data: Path | None = None) -> tuple[str, dict]:
    """The worth table of ``runs`` and its numbers.

    Args:
        runs: finished run folders (``metrics.json`` and ``runs/``) on one dataset.
        data: the dataset folder; default: the first run's ``meta.data``.

    Returns:
        ``(Markdown: the worth table, then the score AUC by distance to the
        deciding object, then (twins kept) the flip table; {"context_blind",
        "worth": {model: [per seed]}, "flip": {model: [per seed]} (twins kept),
        "data", "split"})``.

    Raises:
        ValueError: naming the run or the data folder when something is missing,
            the runs compare other models, or the data is not the strip design.
    """
    if not runs:
        raise ValueError("`runs` must name at least one run folder, received []")
    documents = []
    for run in runs:
        metrics = Path(run) / "metrics.json"
        if not metrics.is_file():
            raise ValueError(f"`runs`: {run} has no metrics.json (not a finished run folder)")
        documents.append(json.loads(metrics.read_text()))
    labels = documents[0]["labels"]
    for run, document in zip(runs, documents, strict=True):
        if document["labels"] != labels:
            raise ValueError(f"`runs`: {run} compares {list(document['labels'])}, "
                             f"{runs[0]} compares {list(labels)}")
    data = Path(data if data is not None else documents[0]["meta"]["data"])
    if not data.is_dir():
        raise ValueError(f"`data`: {data} is not a folder (pass --data)")
    try:
        paths = find_dataset(data, "train2017", "val2017")
    except FileNotFoundError as error:
        raise ValueError(f"`data`: {data} is not a dataset folder ({error})") from error
    objects = context_eval.small_objects(paths)
    if objects is None:
        raise ValueError(f"`data`: {data} is not a strip dataset (no look-alikes to score)")
    split = json.loads(paths.val_annotations.read_text())["info"]["split"]
    for run, document in zip(runs, documents, strict=True):
        run_split = document["meta"].get("split")
        if run_split is not None and run_split != split:
            raise ValueError(f"`data`: {data} is the {split!r} split, but {run} ran on the "
                             f"{run_split!r} split")
        # The same split of another seed or size has other images under the same
        # ids. A run that recorded its labels' digest is checked on the content;
        # an older one on the folder's name, the data's key (design, split, size,
        # counts, seed: context_eval.dataset_name).
        run_data = document["meta"].get("data")
        digest = document["meta"].get("data_sha256")
        if digest is not None:
            if digest != context_eval.labels_digest(paths):
                raise ValueError(f"`data`: {data} holds other labels than the data {run} ran "
                                 f"on ({run_data}): its annotations' sha256 differs")
        elif run_data is not None and Path(run_data).name != data.resolve().name:
            raise ValueError(f"`data`: {data} is not the data {run} ran on ({run_data}); "
                             f"pass the folder named {Path(run_data).name!r}")
    context_file = data / "annotations" / "context_val2017.json"
    context = json.loads(context_file.read_text()) if context_file.is_file() else None
    folders = [Path(run) / "runs" / f"{model}-seed{seed}"
               for run, document in zip(runs, documents, strict=True)
               for seed in document["meta"]["seeds"] for model in labels]
    with_flips = context is not None and all((folder / "twin" / "detections.json").is_file()
                                             for folder in folders)
    results: dict[str, list[dict]] = {model: [] for model in labels}
    for run, document in zip(runs, documents, strict=True):
        for seed in document["meta"]["seeds"]:
            for model in labels:
                folder = Path(run) / "runs" / f"{model}-seed{seed}"
                detections = folder / "detections.json"
                if not detections.is_file():
                    raise ValueError(f"`runs`: {detections} is missing")
                scene = load_detections(detections)
                entry = {"worth": context_eval.context_worth(paths, objects, scene)}
                if with_flips:
                    entry.update(context_eval.flip_results(
                        paths, context, scene, load_detections(folder / "twin" /
                                                               "detections.json")))
                results[model].append(entry)
    blind = context_eval.context_blind(paths, objects)
    table = (context_eval.worth_table(results, labels, split == "control", blind) + "\n\n"
             + context_eval.auc_distance_table(results, labels))
    numbers = {"data": str(data), "split": split, "context_blind": blind,
               "worth": {m: [r["worth"] for r in results[m]] for m in labels}}
    if with_flips:
        numbers["flip"] = {m: [{k: r[k] for k in ("flip", "flip_rule")} for r in results[m]]
                           for m in labels}
        table += "\n\n" + context_eval.flip_table(aggregated_flips(numbers), labels)
    return table, numbers


def aggregated_flips(numbers: dict) -> dict[str, dict]:
    """:func:`context_eval.aggregate_flips` of :func:`worth`'s per-seed flips, per model
    (against the context rule's labels on the control split, whose labels never change)."""
    key = "flip_rule" if numbers["split"] == "control" else "flip"
    return {m: context_eval.aggregate_flips(runs, key) for m, runs in numbers["flip"].items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m enl_experiments.main.worth",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="finished run folders (results/<run>)")
    parser.add_argument("--data", default=None,
                        help="the dataset folder (default: the first run's meta.data)")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    parser.add_argument("--figure", default=None,
                        help="also draw the flip and wrong-way rates by distance to this PNG "
                             "(as context_reach.png; needs the twins' detections)")
    args = parser.parse_args(argv)
    try:
        table, numbers = worth([Path(run) for run in args.runs],
                               Path(args.data) if args.data else None)
        if args.figure and "flip" not in numbers:
            raise ValueError(f"`--figure` needs every run's twin/detections.json and the data's "
                             f"twins, received runs {args.runs!r} without them")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(numbers, indent=2))
    if args.figure:
        draw(args.runs[0], numbers, Path(args.figure))
    return 0


def draw(run, numbers: dict, path: Path) -> Path:
    """``context_reach.png`` of re-scored runs (the main job's figure, with the
    baseline's theoretical reach of the first run's profile)."""
    from enl_experiments.main import figures
    from enl_experiments.main.profiles import get_profile
    from enl_experiments.main.runners import config_root

    document = json.loads((Path(run) / "metrics.json").read_text())
    profile = document["meta"].get("profile")
    reach = (context_eval.baseline_reach(get_profile(profile), config_root())
             if profile else None)
    return figures.context_reach(
        context_eval.reach_curves(aggregated_flips(numbers), document["labels"]), path,
        reach=reach)


if __name__ == "__main__":
    sys.exit(main())
