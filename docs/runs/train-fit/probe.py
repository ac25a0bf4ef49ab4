"""Does a trained model follow the context rule on the strips it was trained on?

For every model and seed of finished strip runs of the main job (Model Garden,
checkpoints kept in ``runs/<model>-seed<k>/model``): predicts the training
strips with the trained checkpoint (``enl_experiments.main.garden_job predict``
on the run's training TFRecords, in a child process, as the main job predicts
the validation strips and the twins), then prints, per context class, the
score AUC between annotated objects and their look-alikes on the training
strips beside the same AUC on the validation strips (the run's own
``detections.json``), and the training AUC by the distance to the deciding
object. Nothing is retrained; the AUC is ``enl_experiments.main.flip_rate.score_auc``
and the objects come from ``enl_experiments.main.context_eval.small_objects``
(``"train"`` or ``"val"``), the code the main job scores with.

A model that learnt the rule scores above 50% on both; one that memorised its
training strips, above 50% on train only; one that ignores context, 50% on
both.

Usage::

    .venv/bin/python docs/runs/train-fit/probe.py --out DIR [--data DIR] results/RUN [...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from enl_core.coco import find_dataset, load_detections
from enl_experiments.common import proc
from enl_experiments.main import context_eval, flip_rate, report
from enl_experiments.main.variants import GARDEN_EXPERIMENTS


def auc(objects, detections, names) -> dict[str, float | None]:
    found = flip_rate.score_auc(objects, detections, labels="label")
    return {names[c]: entry["auc"] for c, entry in found.items() if c in names}


def by_distance(objects, detections, names, width) -> dict[str, list]:
    edges = flip_rate.distance_edges(width, context_eval.DISTANCE_BINS)
    found = flip_rate.auc_by_distance(objects, detections, edges)
    return {names[c]: bins for c, bins in found.items() if c in names}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", required=True, type=Path,
                        help="where the training-strip detections and results.json go")
    parser.add_argument("--data", default=None, type=Path,
                        help="the runs' dataset folder (default: each run's meta.data)")
    args = parser.parse_args(argv)
    rows: dict[str, dict] = {}
    for run in args.runs:
        if not (run / "metrics.json").is_file():
            print(f"error: `runs`: {run} has no metrics.json (not a finished run folder)",
                  file=sys.stderr)
            return 2
        metrics = json.loads((run / "metrics.json").read_text())
        data = args.data or Path(metrics["meta"]["data"])
        try:
            paths = find_dataset(data)
        except FileNotFoundError as error:
            print(f"error: `--data`: {data} is not a dataset folder ({error})", file=sys.stderr)
            return 2
        digest = metrics["meta"].get("data_sha256")
        if digest is not None and digest != context_eval.labels_digest(paths):
            # Another seed or size of the same split has other strips under the same ids.
            print(f"error: `--data`: {data} holds other labels than the data {run} ran on "
                  f"({metrics['meta']['data']}): its annotations' sha256 differs",
                  file=sys.stderr)
            return 2
        names = context_eval._context_names(paths)
        width = context_eval._width(paths)
        train_objects = context_eval.small_objects(paths, "train")
        val_objects = context_eval.small_objects(paths, "val")
        if train_objects is None:
            print(f"error: {data} is not a strip dataset", file=sys.stderr)
            return 2
        for seed in metrics["meta"]["seeds"]:
            for model in metrics["labels"]:
                name = f"{model}-seed{seed}"
                out = args.out / name
                model_dir = run / "runs" / name / "model"
                if not (out / "detections.json").is_file():
                    if not model_dir.is_dir():
                        print(f"error: {name}: no {out / 'detections.json'} and no checkpoint "
                              f"folder {model_dir} to predict it with", file=sys.stderr)
                        return 2
                    subprocess.run(
                        [sys.executable, "-m", "enl_experiments.main.garden_job", "predict",
                         "--model-dir", str(model_dir),
                         "--experiment", GARDEN_EXPERIMENTS[model], "--out", str(out),
                         "--val-pattern", str(data / "tfrecords" / "train2017-*")],
                        check=True, env=proc.child_env(), stdout=subprocess.DEVNULL)
                train = load_detections(out / "detections.json")
                val = load_detections(run / "runs" / name / "detections.json")
                rows[name] = {"model": model, "seed": seed,
                              "train": auc(train_objects, train, names),
                              "val": auc(val_objects, val, names),
                              "train_by_distance": by_distance(train_objects, train, names,
                                                               width)}
                print(name, json.dumps({k: rows[name][k] for k in ("train", "val")}),
                      flush=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    models = list(dict.fromkeys(row["model"] for row in rows.values()))
    classes = list(next(iter(rows.values()))["train"])
    print("\n| score AUC (%), annotated vs look-alike | "
          + " | ".join(f"{m}: train | {m}: val" for m in models) + " |")
    print("|---|" + "---|" * (2 * len(models)))
    for name in classes:
        cells = []
        for model in models:
            for subset in ("train", "val"):
                values = [100 * row[subset][name] for row in rows.values()
                          if row["model"] == model and row[subset][name] is not None]
                cells.append(report.cell(report.stats(values)))
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n| training-strip AUC (%) by distance | " + " | ".join(models) + " |")
    print("|---|" + "---|" * len(models))
    for name in classes:
        first = next(iter(rows.values()))["train_by_distance"][name]
        for index, bin_ in enumerate(first):
            cells = []
            for model in models:
                values = [100 * row["train_by_distance"][name][index]["auc"]
                          for row in rows.values() if row["model"] == model
                          and row["train_by_distance"][name][index]["auc"] is not None]
                cells.append(report.cell(report.stats(values)))
            print(f"| {name} {bin_['low']:.0f}-{bin_['high']:.0f} px "
                  f"(n = {bin_['annotated']}) | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
