"""Side-by-side tables, seed aggregation and the summary files of a run.

Input is the per-seed output of :func:`enl_core.coco.evaluate` (AP in percent)
for each model: ``runs[model][seed] = {"bbox": {...}, "segm": {...}}``. The
table puts the models in columns (baseline first), the metrics in rows, and
one column per other model with its difference to the baseline; with several
seeds each cell is ``mean ± std`` (sample standard deviation, ddof=1), and a
difference is the mean ± std of the per-seed differences (seed ``s`` of a
model against seed ``s`` of the baseline), so that a gain on a class that needs
no context can be read against the seeds' spread.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from enl_core.coco import IOU_TYPES, METRICS
from enl_experiments.common import markdown

IOU_LABELS = {"bbox": "box", "segm": "mask"}


def stats(values) -> dict:
    """Mean and sample std over seeds of ``values`` (Nones left out):
    ``{"mean", "std", "n", "values"}``; std is None below two values."""
    values = [v for v in values if v is not None]
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values), "values": values}


def cell(stat: dict) -> str:
    """One table cell: "mean ± std", "mean" for one seed, "n/a" for none."""
    if stat["mean"] is None:
        return "n/a"
    if stat["std"] is None:
        return f"{stat['mean']:.1f}"
    return f"{stat['mean']:.1f} ± {stat['std']:.1f}"


def aggregate(per_seed: list[dict]) -> dict:
    """Mean and spread over seeds of every metric (None values are skipped).

    Args:
        per_seed: a non-empty list of ``evaluate`` outputs, one per seed.

    Returns:
        ``{iou_type: {metric: {"mean", "std", "n", "values"}, "per_category":
        {name: {...}}}}``; ``std`` is None for a single seed, ``mean`` is None
        when no seed has the metric.

    Raises:
        ValueError: an empty list.
    """
    if not per_seed:
        raise ValueError("`per_seed` must hold at least one evaluation, received []")

    result = {}
    for iou_type in per_seed[0]:
        entry = {metric: stats([run[iou_type][metric] for run in per_seed])
                 for metric in METRICS}
        names = per_seed[0][iou_type].get("per_category", {})
        entry["per_category"] = {
            name: stats([run[iou_type]["per_category"].get(name) for run in per_seed])
            for name in names}
        result[iou_type] = entry
    return result


def _delta(stat: dict, base: dict) -> str:
    if stat["mean"] is None or base["mean"] is None:
        return "n/a"
    paired = stat.get("values", [])
    if len(paired) > 1 and len(paired) == len(base.get("values", [])):
        differences = [a - b for a, b in zip(paired, base["values"], strict=True)]
        return f"{statistics.fmean(differences):+.1f} ± {statistics.stdev(differences):.1f}"
    return f"{stat['mean'] - base['mean']:+.1f}"


def table_rows(aggregated: dict[str, dict], models: list[str]) -> list[tuple[str, dict]]:
    """``[(row label, {model: stat})]``: the six COCO metrics, then per-class AP."""
    rows = []
    for iou_type in IOU_TYPES:
        if iou_type not in aggregated[models[0]]:
            continue
        label = IOU_LABELS[iou_type]
        for metric in METRICS:
            rows.append((f"{label} {metric}",
                         {m: aggregated[m][iou_type][metric] for m in models}))
        for name in aggregated[models[0]][iou_type]["per_category"]:
            rows.append((f"{label} AP[{name}]",
                         {m: aggregated[m][iou_type]["per_category"][name] for m in models}))
    return rows


def comparison_table(aggregated: dict[str, dict], labels: dict[str, str] | None = None) -> str:
    """A Markdown table, models side by side and the difference to the first.

    Args:
        aggregated: ``{model: aggregate(...)}``, baseline first (dict order).
        labels: column titles per model; default the model keys.

    Returns:
        The table as Markdown text (no trailing newline).

    Example:
        >>> print(comparison_table({"baseline": agg_b, "enl": agg_e},
        ...                        {"baseline": "baseline", "enl": "+3ENL TD"}))
    """
    models = list(aggregated)
    if len(models) < 1:
        raise ValueError("`aggregated` must hold at least one model, received {}")
    labels = {m: (labels or {}).get(m, m) for m in models}
    header = ["metric", *(labels[m] for m in models)]
    if len(models) > 1:
        header += [f"Δ {labels[m]}" for m in models[1:]]
    rows = []
    for label, stats in table_rows(aggregated, models):
        cells = [label, *(cell(stats[m]) for m in models)]
        cells += [_delta(stats[m], stats[models[0]]) for m in models[1:]]
        rows.append(cells)
    return markdown.table(header, rows)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_summary(run_dir, runs: dict[str, list[dict]], labels: dict[str, str],
                  meta: dict, figures: list[str], sections=(), extra: dict | None = None) -> str:
    """Writes ``metrics.json`` and ``summary.md`` into ``run_dir``; returns the table.

    Args:
        run_dir: the (temporary) results folder of the run.
        runs: ``{model: [evaluate output per seed]}``, baseline first.
        labels: column titles per model.
        meta: what produced the numbers (command, machine, profile, seeds,
            data, timings); written to both files.
        figures: file names of the figures in ``run_dir``, listed in the summary.
        sections: ``(title, Markdown)`` pairs added after the table (twins, flip rates).
        extra: more entries for ``metrics.json`` (e.g. the per-seed context results).
    """
    run_dir = Path(run_dir)
    aggregated = {model: aggregate(per_seed) for model, per_seed in runs.items()}
    table = comparison_table(aggregated, labels)
    document = {"meta": meta, "labels": labels, "per_seed": runs, "aggregate": aggregated,
                **(extra or {})}
    (run_dir / "metrics.json").write_text(json.dumps(_json_safe(document), indent=2))
    lines = [f"# {meta.get('title', 'ENL experiment')}", ""]
    for key in ("command", "machine", "framework", "profile", "data", "num_train", "seeds",
                "train_steps",
                "wall_time", "loss_change_last_20pct"):
        if key in meta:
            lines.append(f"- **{key.replace('_', ' ')}**: {meta[key]}")
    lines += ["", "COCO metrics (pycocotools) on the validation images, in percent"
              + (f"; mean ± std over {len(meta.get('seeds', []))} seeds"
                 if len(meta.get("seeds", [])) > 1 else "") + ".", "", table, ""]
    for title, section in sections:
        lines += [f"## {title}", "", section, ""]
    if figures:
        lines += ["## Figures", ""] + [f"- [{name}]({name})" for name in figures] + [""]
    (run_dir / "summary.md").write_text("\n".join(lines))
    return table


def plateau_text(plateaus: dict[str, list], labels: dict[str, str]) -> str:
    """``"baseline +0.4%/-1.2%, ..."``: each model's per-seed loss change over
    the last 20% of the steps (:func:`plateau`), for the summary."""
    return ", ".join(
        f"{labels[m]} " + "/".join("n/a" if p is None else f"{100 * p['relative_change']:+.1f}%"
                                   for p in per_seed) for m, per_seed in plateaus.items())


def plateau(history: dict, tag: str = "total_loss", tail: float = 0.2) -> dict | None:
    """Whether a training loss is flat over the last ``tail`` of the steps.

    Compares the mean of ``tag`` over the last ``tail`` of the logged steps
    with its mean over the ``tail`` before it.

    Args:
        history: ``{tag: {"step": [...], "value": [...]}}`` (``losses.json``).
        tag: the loss.
        tail: the fraction of the steps, in (0, 0.5].

    Returns:
        ``{"last": mean, "before": mean, "relative_change": (last - before) / before}``,
        or None when ``tag`` has fewer than 4 points in the two windows.

    Raises:
        ValueError: naming `tail` and the value received.
    """
    if not (isinstance(tail, float) and 0.0 < tail <= 0.5):
        raise ValueError(f"`tail` must be a float in (0, 0.5], received {tail!r}")
    series = history.get(tag)
    if not series or not series["step"]:
        return None
    last_step = max(series["step"])
    span = tail * last_step
    last = [v for s, v in zip(series["step"], series["value"], strict=True)
            if s > last_step - span]
    before = [v for s, v in zip(series["step"], series["value"], strict=True)
              if last_step - 2 * span < s <= last_step - span]
    if len(last) < 2 or len(before) < 2:
        return None
    last_mean, before_mean = statistics.fmean(last), statistics.fmean(before)
    return {"last": last_mean, "before": before_mean,
            "relative_change": (last_mean - before_mean) / before_mean}
