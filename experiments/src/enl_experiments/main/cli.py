"""The main job: baseline, +1NL BU and +3ENL TD on the embedded dataset (or COCO), end to end.

``make experiment`` runs ``python -m enl_experiments.main`` with ``PROFILE``,
``SEEDS``, ``VARIANTS``, ``DATASET``, ``COCO_DIR`` and ``FRAMEWORK`` passed through:

1. data: an embedded dataset (``--dataset strip``, the default, long-range
   context with counterfactual twins, :mod:`enl_experiments.context_dataset`;
   or ``beach``, :mod:`enl_experiments.dataset`), cached under ``data/``, or a
   COCO 2017 folder (``--coco-dir``);
2. per seed, the variants (:mod:`enl_experiments.main.variants`; all three by
   default) trained with the same data, budget and seed (Model Garden's train
   entry, or the torch mirror), deterministically;
3. each model's validation detections scored with pycocotools (AP, AP50, AP75,
   APs, APm, APl for boxes and masks, plus AP per class), and with twins its
   AP on the twins and its flip rate (:mod:`enl_experiments.main.flip_rate`);
4. the side-by-side tables, printed and written to ``results/<run>/summary.md``
   and ``metrics.json``, and the figures (loss curves, AP bars, detections,
   ENL attention of a query pixel, DCT position filters, context reach).

The results are built in ``results/.incomplete-<run>/`` and renamed to
``results/<run>/`` only when every step succeeded; any failure prints what
failed and exits non-zero. Paper: Levi & Ullman, BMVC 2019 (Tables 1, 2; Fig. 1, 3).

Example:
    python -m enl_experiments.main --profile default --seeds 1 --framework garden
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from enl_core.coco import evaluate, find_dataset, load_detections
from enl_experiments import dataset
from enl_experiments.common import machine
from enl_experiments.common.extras import MissingExtra
from enl_experiments.main import context_eval, figures, report
from enl_experiments.main.profiles import PROFILES, get_profile
from enl_experiments.main.runners import (
    DataPaths,
    StepFailed,
    get_runner,
)
from enl_experiments.main.variants import ENL_VARIANT, LABELS, VARIANTS, parse_variants

SMALL_AREA = 32 ** 2  # COCO's "small" objects


def _data_paths(root: Path, tfrecords: Path) -> DataPaths:
    """The splits train2017 / val2017 of a COCO-layout folder (enl_core.coco's layout)."""
    try:
        paths = find_dataset(root, "train2017", "val2017")
    except FileNotFoundError as error:
        raise StepFailed(f"the COCO folder {root} is incomplete: {error}") from error
    categories = json.loads(paths.val_annotations.read_text())["categories"]
    return DataPaths(**dataclasses.asdict(paths),
                     num_classes=max(c["id"] for c in categories) + 1, tfrecords=tfrecords)


def prepare_data(args, profile) -> DataPaths:
    """The embedded dataset for the profile (generated once, then cached), or COCO_DIR."""
    if args.coco_dir:
        root = Path(args.coco_dir).resolve()
        return _data_paths(root, Path(args.data_dir).resolve() / f"tfrecords-{root.name}")
    name = context_eval.dataset_name(args.dataset, args.split, profile, args.data_seed)
    root = Path(args.data_dir).resolve() / name
    if not (root / ".complete").exists():
        staging = root.with_name(f".incomplete-{name}")
        shutil.rmtree(staging, ignore_errors=True)
        print(f"generating the embedded {args.dataset} dataset ({args.split} split) in {root}")
        context_eval.generate(args.dataset, staging, profile, args.split, args.data_seed)
        (staging / ".complete").write_text("ok\n")
        shutil.rmtree(root, ignore_errors=True)
        os.replace(staging, root)
    return context_eval.with_twins(_data_paths(root, root / "tfrecords"))


def choose_figure_images(annotation_file: Path, count: int, attention_category: str | None):
    """Validation images with the most small objects, and a query pixel on one of them.

    Returns:
        ``(image ids, (image_id, x, y))``: ``count`` ids, most small objects
        first; the query is the centre of a small object of
        ``attention_category`` (any small object when None or absent) in the
        first image that has one.
    """
    document = json.loads(annotation_file.read_text())
    names = {c["id"]: c["name"] for c in document["categories"]}
    small: dict[int, list[dict]] = {}
    for annotation in document["annotations"]:
        if annotation["area"] < SMALL_AREA and not annotation.get("iscrowd", 0):
            small.setdefault(annotation["image_id"], []).append(annotation)
    ordered = sorted(small, key=lambda i: (-len(small[i]), i))
    if not ordered:
        ordered = [image["id"] for image in document["images"]]
    query = None
    for image_id in ordered:
        candidates = [a for a in small.get(image_id, [])
                      if attention_category is None
                      or names[a["category_id"]] == attention_category]
        if candidates:
            x, y, w, h = candidates[0]["bbox"]
            query = (image_id, x + w / 2, y + h / 2)
            break
    if query is None:
        image = next(i for i in document["images"] if i["id"] == ordered[0])
        query = (image["id"], image["width"] / 2, image["height"] / 2)
    chosen = [query[0]] + [i for i in ordered if i != query[0]]
    return chosen[:count], query


def _read_attention(path: Path, image_id: int) -> dict[int, np.ndarray]:
    if not path.exists():
        return {}
    maps = {}
    with np.load(path) as arrays:
        for key in arrays.files:
            prefix = f"image{image_id}_level"
            if key.startswith(prefix) and key.endswith("_map"):
                maps[int(key[len(prefix):-len("_map")])] = arrays[key]
    return maps


def _learned_dct_weights(block_dir: Path) -> dict[str, np.ndarray]:
    weights = {}
    for path in sorted(block_dir.glob("*.npz")) if block_dir.exists() else []:
        with np.load(path) as arrays:
            if "dct_weights" in arrays.files:
                weights[f"trained {path.stem}"] = arrays["dct_weights"]
    return weights


def make_figures(run_dir: Path, data: DataPaths, aggregated: dict, histories: dict,
                 seed0_dirs: dict[str, Path], figure_ids: list[int],
                 query: tuple[int, float, float]) -> list[str]:
    """All figures of the run; returns their file names."""
    labels = {m: LABELS[m] for m in aggregated}
    names = []
    figures.loss_curves({LABELS[m]: runs for m, runs in histories.items()},
                        run_dir / "loss_curves.png")
    names.append("loss_curves.png")
    figures.ap_bars(aggregated, labels, run_dir / "ap_bars.png")
    names.append("ap_bars.png")
    document = json.loads(data.val_annotations.read_text())
    files = {image["id"]: data.val_images / image["file_name"] for image in document["images"]}
    ground_truth: dict[int, list[dict]] = {}
    for annotation in document["annotations"]:
        ground_truth.setdefault(annotation["image_id"], []).append(annotation)
    category_names = {c["id"]: c["name"] for c in document["categories"]}
    detections = {LABELS[m]: load_detections(d / "detections.json")
                  for m, d in seed0_dirs.items()}
    figures.detections_grid([(i, files[i]) for i in figure_ids], ground_truth, detections,
                            category_names, run_dir / "detections.png")
    names.append("detections.png")
    if ENL_VARIANT not in seed0_dirs:
        return names
    enl_dir = seed0_dirs[ENL_VARIANT]
    maps = _read_attention(enl_dir / "attention.npz", query[0])
    grid = (32, 32)
    if maps:
        figures.attention_figure(files[query[0]], query[1:], maps, run_dir / "attention.png",
                                 title=f"{LABELS[ENL_VARIANT]}: attention (F + L row) of the "
                                       "query pixel at each block")
        names.append("attention.png")
        grid = tuple(maps[min(maps)].shape)
    positions = ((grid[0] // 4, grid[1] // 4), (grid[0] // 2, (3 * grid[1]) // 4))
    figures.dct_filters(run_dir / "dct_filters.png", grid=grid, positions=positions,
                        dct_weights=_learned_dct_weights(enl_dir / "blocks"))
    names.append("dct_filters.png")
    return names


def seed_list(first: int, count: int) -> list[int]:
    """The seeds of a run: ``first, ..., first + count - 1``.

    Raises:
        ValueError: naming `first_seed` / `seeds` and the value received.
    """
    if isinstance(first, bool) or not isinstance(first, int) or first < 0:
        raise ValueError(f"`first_seed` must be an int >= 0, received {first!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"`seeds` must be an int >= 1, received {count!r}")
    return list(range(first, first + count))


def dry_run(args, runner, profile_name: str, seeds: list[int], models: tuple[str, ...]) -> None:
    """Prints what :func:`run` would do, having checked what it needs first."""
    print(f"profile {profile_name}, framework {args.framework}, seeds {seeds}, "
          f"variants {', '.join(models)}")
    for model in models:
        names = [str(path) for path in runner.config_files(model)] or ["none (profile sizes)"]
        print(f"{LABELS[model]} configs: {', '.join(names)}")
    print(f"data: {args.coco_dir or Path(args.data_dir).resolve()}")
    print(f"results: {Path(args.results_dir).resolve()}")


def run(args) -> Path | None:
    """Runs the whole job; returns the completed results folder (None for a dry run)."""
    started = time.time()
    profile_name = args.profile or ("paper" if args.coco_dir else "default")
    profile = get_profile(profile_name)
    overrides = {k: v for k, v in (("train_steps", args.train_steps),
                                   ("learning_rate", args.learning_rate),
                                   ("num_train", args.num_train)) if v is not None}
    if overrides.get("num_train") is not None and args.coco_dir:
        raise ValueError(f"`num_train` sizes the embedded dataset; it cannot be used with "
                         f"`coco_dir`, received num_train={args.num_train!r} and "
                         f"coco_dir={args.coco_dir!r}")
    if overrides:
        profile = dataclasses.replace(profile, **overrides)
    runner = get_runner(args.framework, profile, args.config_dir)
    seeds = seed_list(args.first_seed, args.seeds)
    models = parse_variants(args.variants)
    if args.dry_run:
        return dry_run(args, runner, profile_name, seeds, models)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    source = "coco" if args.coco_dir else f"{args.dataset}-{args.split}"
    run_name = args.run_name or f"{stamp}-{args.framework}-{profile_name}-{source}"
    results = Path(args.results_dir).resolve()
    final_dir = results / run_name
    if final_dir.exists():
        raise StepFailed(f"results folder {final_dir} already exists; pick another --run-name")
    run_dir = results / f".incomplete-{run_name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    args.run_dir = run_dir  # main() names it if a later step fails
    print(f"run {run_name}: profile {profile_name}, framework {args.framework}, seeds {seeds}, "
          f"variants {', '.join(models)}; building in {run_dir}")

    data = prepare_data(args, profile)
    runner.prepare(data, run_dir)
    attention_category = None if args.coco_dir else "swimmer"
    figure_ids, query = choose_figure_images(data.val_annotations, profile.figure_images,
                                             attention_category)
    context = context_eval.context_document(data)
    objects = context_eval.small_objects(data) if context is not None else None
    evaluations: dict[str, list[dict]] = {m: [] for m in models}
    context_results: dict[str, list[dict]] = {m: [] for m in models}
    cross_checks: dict[str, list[dict]] = {m: [] for m in models}
    histories: dict[str, list[dict]] = {m: [] for m in models}
    seed0_dirs = {}
    for seed in seeds:
        for model in models:
            out = run_dir / "runs" / f"{model}-seed{seed}"
            out.mkdir(parents=True, exist_ok=True)
            runner.train_and_predict(model, data, seed, out,
                                     [query] if model == ENL_VARIANT else [])
            evaluations[model].append(evaluate(data.val_annotations, out / "detections.json"))
            if context is not None:
                context_results[model].append(context_eval.evaluate_context(data, context, out,
                                                                             objects))
            histories[model].append(json.loads((out / "losses.json").read_text()))
            garden_eval = out / "garden_eval.json"
            if garden_eval.exists():
                cross_checks[model].append({tag: series["value"][-1] for tag, series in
                                            json.loads(garden_eval.read_text()).items()
                                            if series["value"]})
            if seed == seeds[0]:
                seed0_dirs[model] = out

    aggregated = {m: report.aggregate(evaluations[m]) for m in models}
    figure_names = make_figures(run_dir, data, aggregated, histories, seed0_dirs, figure_ids,
                                query)
    labels = {m: LABELS[m] for m in models}
    sections = []
    blind = context_eval.context_blind(data, objects) if objects is not None else None
    if context is not None:
        sections, curves = context_eval.context_sections(context_results, labels,
                                                         args.split == "control", blind)
        figures.context_reach(curves, run_dir / "context_reach.png",
                              reach=context_eval.baseline_reach(profile, runner.configs))
        figure_names.append("context_reach.png")
    wall = time.time() - started
    command = "python -m enl_experiments.main " + " ".join(shlex.quote(a) for a in args.argv)
    source_title = ("COCO 2017" if args.coco_dir
                    else f"{args.dataset} dataset, {args.split} split")
    meta = {
        "title": f"{' vs '.join(LABELS[m] for m in models)}, Mask R-CNN ({args.framework}), "
                 f"{source_title}",
        "command": command, "machine": machine.describe(machine.machine_info()),
        "framework": args.framework,
        "profile": profile_name, "dataset": None if args.coco_dir else args.dataset,
        "split": None if args.coco_dir else args.split, "variants": list(models),
        "data": str(data.root), "data_sha256": context_eval.labels_digest(data),
        "seeds": seeds, "num_train": None if args.coco_dir else profile.num_train,
        "train_steps": "from the profile's YAML" if profile.own_schedule else
        f"{profile.train_steps} per model and seed (batch {profile.batch_size}, "
        f"{'x'.join(map(str, data.image_size or (profile.image_size,) * 2))} px)",
        "wall_time": f"{wall / 60:.1f} min", "query": list(query), "figure_images": figure_ids,
    }
    # The budget's check: total loss over the last 20% of the steps vs the 20% before.
    meta["plateau"] = {m: [report.plateau(h) for h in histories[m]] for m in models}
    meta["loss_change_last_20pct"] = report.plateau_text(meta["plateau"], labels)
    if any(cross_checks.values()):
        meta["model_garden_own_eval"] = cross_checks
    extra = ({"context": context_results} if context is not None else {})
    if blind is not None:
        extra["context_blind"] = blind
    table = report.write_summary(run_dir, evaluations, labels, meta, figure_names,
                                 sections=sections, extra=extra)
    os.replace(run_dir, final_dir)
    latest = results / "latest"
    if latest.is_symlink() or not latest.exists():
        if latest.is_symlink():
            latest.unlink()
        latest.symlink_to(final_dir.name)
    print()
    print(table)
    for title, section in sections:
        print(f"\n{title}\n\n{section}")
    print()
    print(f"results: {final_dir} (summary.md, metrics.json, {', '.join(figure_names)}); "
          f"{wall / 60:.1f} min")
    return final_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m enl_experiments.main",
        description="Train the baseline, +1NL BU and +3ENL TD Mask R-CNN with the same data, "
                    "budget and seed, evaluate them with pycocotools (and on counterfactual "
                    "twins), print the tables and draw the figures.")
    parser.add_argument("--profile", default="", choices=["", *sorted(PROFILES)],
                        help="budget; empty: 'default' (embedded data) or 'paper' (COCO)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="number of seeds (FIRST..FIRST+N-1); mean and spread")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="the first seed (to add seeds to an earlier run's on another machine)")
    parser.add_argument("--framework", default="garden", choices=("garden", "torch"))
    parser.add_argument("--coco-dir", default="",
                        help="a COCO 2017 folder (train2017/, val2017/, annotations/)")
    parser.add_argument("--split", default="context", choices=dataset.SPLITS,
                        help="embedded dataset split: 'context' or the 'control'")
    parser.add_argument("--dataset", default="strip", choices=context_eval.DESIGNS,
                        help="embedded dataset design: 'strip' (long-range context, twins) "
                             "or 'beach' (the first experiment's scenes)")
    parser.add_argument("--variants", default="",
                        help=f"comma-separated subset of {','.join(VARIANTS)} (the baseline "
                             "is always trained); empty: all")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the embedded dataset")
    parser.add_argument("--data-dir", default="data",
                        help="generated data and TFRecords (default: data/ in the current folder)")
    parser.add_argument("--results-dir", default="results",
                        help="run folders (default: results/ in the current folder)")
    parser.add_argument("--config-dir", default="",
                        help="YAML configs laid out as the packaged enl_experiments/configs/ "
                             "(beach_*.yaml, garden/*.yaml); default: the packaged ones")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the framework's extra and the configs, print the plan, "
                             "write nothing")
    parser.add_argument("--run-name", default=None)
    parser.add_argument("--train-steps", type=int, default=None,
                        help="override the profile's steps per model and seed")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="override the profile's peak learning rate")
    parser.add_argument("--num-train", type=int, default=None,
                        help="override the profile's number of embedded training images "
                             "(the validation images and twins do not change: each image is "
                             "a pure function of the data seed, its subset and its index)")
    return parser


def check_overrides(args) -> None:
    """The profile overrides are positive (and the rate finite) when given.

    Raises:
        ValueError: naming the flag and the value received.
    """
    for flag, value in (("--train-steps", args.train_steps), ("--num-train", args.num_train)):
        if value is not None and value < 1:
            raise ValueError(f"`{flag}` must be an int >= 1, received {value!r}")
    rate = args.learning_rate
    if rate is not None and not (np.isfinite(rate) and rate > 0):
        raise ValueError(f"`--learning-rate` must be a finite number > 0, received {rate!r}")


def unfinished(run_dir: Path | None) -> str:
    """What a failed or interrupted run left behind: its partial folder, or nothing."""
    if run_dir is None:
        return ("no results folder was completed; nothing was written (it stopped before the "
                "run's folder was made)")
    return f"no results folder was completed; partial output stays in {run_dir}"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        seed_list(args.first_seed, args.seeds)
        parse_variants(args.variants)
        check_overrides(args)
    except ValueError as error:
        parser.error(str(error))
    # make passes unset knobs as empty strings.
    args.coco_dir = args.coco_dir or None
    args.profile = args.profile or None
    args.config_dir = args.config_dir or None
    args.run_dir = None
    try:
        run(args)
    except (StepFailed, MissingExtra, ValueError, FileNotFoundError) as error:
        print(f"\nexperiment FAILED: {error}", file=sys.stderr)
        print(unfinished(args.run_dir), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nexperiment interrupted; {unfinished(args.run_dir)}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
