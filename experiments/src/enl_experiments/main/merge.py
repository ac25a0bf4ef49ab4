"""``python -m enl_experiments.main.merge``: one table from runs made in several sittings.

``make experiment SEEDS=1`` today and ``make experiment SEEDS=2 FIRST_SEED=1``
tomorrow leave two results folders; this writes a third whose ``summary.md``
and ``metrics.json`` hold the seeds of both, aggregated exactly as one run of
``SEEDS=3`` would (:func:`enl_experiments.main.report.write_summary`: mean ±
std over seeds, per-seed paired deltas; twins, flip rates and
``context_reach.png`` from the per-seed context results). Nothing is
retrained or re-scored: the inputs are the runs' own ``metrics.json``.

The runs must agree on what was compared (title: models, framework, data
design and split; profile; steps) and have distinct seeds; anything else is
refused, naming the run and the field.

Example::

    python -m enl_experiments.main.merge --out results/strip-3seeds \\
        results/20261202-100145-garden-default-strip-context \\
        results/20261202-110501-garden-default-strip-context
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from enl_experiments.main import context_eval, figures, report
from enl_experiments.main.profiles import get_profile
from enl_experiments.main.runners import config_root

# What every merged run must share (metrics.json "meta" keys).
SAME = ("title", "framework", "profile", "train_steps")
# What runs that record it must share (runs from before it was kept lack it).
SAME_WHEN_RECORDED = ("num_train", "data_sha256")


def _control(meta: dict) -> bool:
    if meta.get("split") is not None:
        return meta["split"] == "control"
    return "control split" in meta.get("title", "")  # runs from before "split" was kept


def load_run(path: Path) -> dict:
    """A completed run's ``metrics.json``.

    Raises:
        ValueError: naming the run when it has none (an unfinished ``.incomplete-`` run).
    """
    metrics = Path(path) / "metrics.json"
    if not metrics.is_file():
        raise ValueError(f"`runs`: {path} has no metrics.json (not a completed run folder)")
    return json.loads(metrics.read_text())


def merge_documents(documents: list[dict], names: list[str]) -> dict:
    """The runs' per-seed results as one run's, seeds in ascending order.

    Returns:
        ``{"labels", "per_seed", "context" (or None), "meta"}``.

    Raises:
        ValueError: the runs differ in a :data:`SAME` field, in their models,
            or share a seed; the message names the runs and the field.
    """
    if len(documents) < 2:
        raise ValueError(f"`runs` must name at least two run folders, received {names!r}")
    first = documents[0]
    for document, name in zip(documents[1:], names[1:], strict=True):
        for key in SAME:
            if document["meta"].get(key) != first["meta"].get(key):
                raise ValueError(f"`runs`: {name} has {key}={document['meta'].get(key)!r}, "
                                 f"{names[0]} has {first['meta'].get(key)!r}")
        for key in SAME_WHEN_RECORDED:
            if key in document["meta"] and key in first["meta"] \
                    and document["meta"][key] != first["meta"][key]:
                raise ValueError(f"`runs`: {name} has {key}={document['meta'][key]!r}, "
                                 f"{names[0]} has {first['meta'][key]!r}")
        if document["labels"] != first["labels"]:
            raise ValueError(f"`runs`: {name} compares {list(document['labels'])}, "
                             f"{names[0]} compares {list(first['labels'])}")
        if ("context" in document) != ("context" in first):
            raise ValueError(f"`runs`: {name} and {names[0]} differ in having twins")
    seeds = [(seed, index, position) for index, document in enumerate(documents)
             for position, seed in enumerate(document["meta"]["seeds"])]
    values = [seed for seed, _, _ in seeds]
    if len(set(values)) != len(values):
        raise ValueError(f"`runs` must have distinct seeds, received seeds {values} from "
                         f"{names!r}")
    seeds.sort()
    models = list(first["labels"])

    def gather(key):
        return {m: [documents[i][key][m][p] for _, i, p in seeds] for m in models}

    meta = dict(first["meta"])
    meta.update(
        seeds=[seed for seed, _, _ in seeds],
        command=" ; ".join(d["meta"]["command"] for d in documents),
        machine=" ; ".join(sorted({d["meta"]["machine"] for d in documents})),
        wall_time=" + ".join(d["meta"]["wall_time"] for d in documents),
        merged_from=list(names),
        plateau={m: [documents[i]["meta"]["plateau"][m][p] for _, i, p in seeds]
                 for m in models})
    meta["loss_change_last_20pct"] = report.plateau_text(meta["plateau"], first["labels"])
    for key in ("model_garden_own_eval", "query", "figure_images"):
        meta.pop(key, None)
    # The context-blind reference depends on the data only, which the runs share.
    blind = first.get("context_blind") if all("context_blind" in d for d in documents) else None
    return {"labels": first["labels"], "per_seed": gather("per_seed"),
            "context": gather("context") if "context" in first else None,
            "context_blind": blind, "meta": meta}


def merge(out: Path, runs: list[Path]) -> str:
    """Writes the merged run to ``out``; returns its table."""
    out = Path(out)
    if out.exists():
        raise ValueError(f"`out`: {out} already exists")
    names = [str(run) for run in runs]
    merged = merge_documents([load_run(run) for run in runs], names)
    out.mkdir(parents=True)
    labels, meta = merged["labels"], merged["meta"]
    sections, figure_names, extra = [], [], {}
    if merged["context"] is not None:
        sections, curves = context_eval.context_sections(merged["context"], labels,
                                                         _control(meta), merged["context_blind"])
        profile = get_profile(meta["profile"])
        figures.context_reach(curves, out / "context_reach.png",
                              reach=context_eval.baseline_reach(profile, config_root()))
        figure_names.append("context_reach.png")
        extra = {"context": merged["context"]}
        if merged["context_blind"] is not None:
            extra["context_blind"] = merged["context_blind"]
    table = report.write_summary(out, merged["per_seed"], labels, meta, figure_names,
                                 sections=sections, extra=extra)
    return "\n\n".join([table, *(f"{title}\n\n{section}" for title, section in sections)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m enl_experiments.main.merge",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the merged run's folder (new)")
    parser.add_argument("runs", nargs="+", help="completed run folders (results/<run>)")
    args = parser.parse_args(argv)
    try:
        text = merge(Path(args.out), [Path(run) for run in args.runs])
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text)
    print(f"\nmerged {len(args.runs)} runs into {args.out} (summary.md, metrics.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
