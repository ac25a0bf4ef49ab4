"""The bench's targets, checked against one run's results: met / not met / not measured.

Every target yields a row with the measured number, whatever it is; a target
whose entries did not run says why ("not measured"), it is never left out.
Rows with status "reported" carry a number with no goal: ENL's speed-up over
NL and attention, beside the ratio of multiply-adds that bounds it.

Memory: ENL's peak above the input is judged against the live tensors of
ENL's hand-written backward at its peak, the same in torch and Keras
(:func:`enl_experiments.bench.cases.enl_floor_bytes`:
3.0x the input forward, 5.5x forward + backward at C' = C / 2), and every
measured peak of every entry must be at least its lower bound
(:func:`~enl_experiments.bench.cases.lower_bound_bytes`): a figure below it
means the method missed allocations, and the bench fails.
"""

from __future__ import annotations

import dataclasses
import itertools

from enl_experiments.bench import detectors as detectors_lib
from enl_experiments.bench import training as training_lib
from enl_experiments.bench.fitting import loglog_slope

# Every goal holds for each N in this range (the efficiency, slope and memory goals).
N_RANGE = (4096, 65536)
EFFICIENCY = {"forward": 0.85, "forward_backward": 0.80}
SLOPE_RANGE = N_RANGE
SLOPE_MAX = 1.05
MEMORY_FLOOR_MAX = 1.10  # peak above input / live-tensor floor
SPEEDUP_NS = (4096, 16384)
FLOPS_MAX = 0.05
PARAMS_MAX = 0.01
AGREEMENT_MAX = 0.02
COMPETITORS = {"torch": ("nl_dot_product", "nl_embedded_gaussian", "sdpa"),
               "keras": ("nl_dot_product", "nl_embedded_gaussian", "keras_dpa")}
# ENL as a user gets it, and under a compiler when the run includes one.
ENL_VARIANTS = ("enl", "enl_xla", "enl_compiled")
MODE_NAMES = {"forward": "fwd", "forward_backward": "fwd+bwd"}


@dataclasses.dataclass(frozen=True)
class Target:
    """One checked target."""

    name: str
    goal: str
    measured: str
    status: str  # "met", "not met" or "not measured"


def _status(ok: bool) -> str:
    return "met" if ok else "not met"


def efficiency(entry: dict, sgemm: dict) -> float | None:
    """Achieved GFLOP/s of an entry over the same-run ENL-shaped sgemm GFLOP/s at its N.

    The reference is the sgemm chain timed in alternation with the entry
    (``sgemm_paired``: the median over rounds of each round's ratio) when
    there is one, else the section's table.
    """
    reference = entry.get("sgemm_paired") or sgemm.get("by_side", {}).get(
        str(entry["side"]), {}).get(entry["mode"])
    if entry.get("status") != "ok" or not reference:
        return None
    if "efficiency_median_of_rounds" in reference:
        return reference["efficiency_median_of_rounds"]
    return entry["gflops"] / reference["gflops"]


def _entries(section: dict, implementation: str, mode: str) -> list[dict]:
    return [e for e in section.get("entries", [])
            if e["implementation"] == implementation and e["mode"] == mode]


def _find(section: dict, implementation: str, mode: str, n: int) -> dict | None:
    return next((e for e in _entries(section, implementation, mode) if e["n"] == n), None)


def _why(entry: dict | None, what: str) -> str:
    if entry is None:
        return f"{what} not in this run"
    return f"{what}: {entry['status']} ({entry.get('reason', '')})"


def scaling_targets(framework: str, section: dict) -> list[Target]:
    """Efficiency, slope, memory, speed-up and infeasibility targets of one framework."""
    targets = []
    tag = f"[{framework}]"
    variants = [v for v in ENL_VARIANTS
                if any(e["implementation"] == v for e in section.get("entries", []))] or ["enl"]
    low, high = N_RANGE
    for variant, (mode, goal) in itertools.product(variants, EFFICIENCY.items()):
        label = "ENL" if variant == "enl" else variant
        name = f"{tag} {label} {MODE_NAMES[mode]} efficiency, N {low:,}..{high:,}"
        rows = [(e["n"], efficiency(e, section["sgemm"]))
                for e in _entries(section, variant, mode) if low <= e["n"] <= high]
        measured = [(n, value) for n, value in rows if value is not None]
        if not measured:
            targets.append(Target(name, f">= {goal:.0%} of sgemm", "no entry ran",
                                  "not measured"))
            continue
        worst = min(value for _, value in measured)
        text = ", ".join(f"N={n:,}: {value:.0%}" for n, value in measured)
        if len(measured) < len(rows):
            text += f" ({len(rows) - len(measured)} N did not run)"
        targets.append(Target(name, f">= {goal:.0%} of sgemm", f"min {worst:.0%} ({text})",
                              _status(worst >= goal and len(measured) == len(rows))))
    for mode in EFFICIENCY:
        name = f"{tag} ENL {MODE_NAMES[mode]} log-log slope, N {low:,}..{high:,}"
        points = [(e["n"], e["median_s"]) for e in _entries(section, "enl", mode)
                  if SLOPE_RANGE[0] <= e["n"] <= SLOPE_RANGE[1] and e["status"] == "ok"]
        if len({n for n, _ in points}) < 2 or max(n for n, _ in points) < SLOPE_RANGE[1]:
            targets.append(Target(name, f"<= {SLOPE_MAX}", f"{len(points)} point(s) in range",
                                  "not measured"))
            continue
        slope = loglog_slope(*zip(*points, strict=True))
        targets.append(Target(name, f"<= {SLOPE_MAX}",
                              f"{slope:.2f} over {len(points)} sizes", _status(slope <= SLOPE_MAX)))
    for mode in EFFICIENCY:
        targets.append(memory_floor_target(tag, section, mode))
    targets.append(lower_bound_target(tag, section))
    for n, mode in itertools.product(SPEEDUP_NS, EFFICIENCY):
        targets.append(speedup_row(tag, section, framework, mode, n))
    name = f"{tag} N = 65,536: NL reported infeasible while ENL runs"
    enl = _find(section, "enl", "forward", 65536)
    nls = [_find(section, nl, "forward", 65536)
           for nl in ("nl_dot_product", "nl_embedded_gaussian")]
    if enl is None or any(nl is None for nl in nls):
        targets.append(Target(name, "NL infeasible, ENL ok", "N = 65,536 not in this run",
                              "not measured"))
    else:
        text = f"ENL {enl['status']}; " + "; ".join(
            f"{nl['implementation']} {nl['status']}" for nl in nls)
        ok = enl["status"] == "ok" and all(nl["status"] == "infeasible" for nl in nls)
        targets.append(Target(name, "NL infeasible, ENL ok", text, _status(ok)))
    return targets


def memory_floor(entry: dict) -> float | None:
    """Peak above the input over the live-tensor floor of the entry, or None."""
    if entry.get("status") != "ok" or entry.get("peak_bytes") is None \
            or not entry.get("floor_bytes"):
        return None
    return entry["peak_bytes"] / entry["floor_bytes"]


def memory_floor_target(tag: str, section: dict, mode: str) -> Target:
    """ENL's peak memory above the input within 10% of its live-tensor floor, every N."""
    low, high = N_RANGE
    name = f"{tag} ENL {MODE_NAMES[mode]} peak memory above input / live-tensor floor, " \
           f"N {low:,}..{high:,}"
    goal = f"<= {MEMORY_FLOOR_MAX:.2f}"
    rows = [e for e in _entries(section, "enl", mode) if low <= e["n"] <= high]
    measured = [(e, memory_floor(e)) for e in rows]
    measured = [(e, ratio) for e, ratio in measured if ratio is not None]
    if not measured:
        return Target(name, goal, "no entry in range ran with a peak", "not measured")
    worst_entry, worst = max(measured, key=lambda pair: pair[1])
    text = (f"max {worst:.2f} at N={worst_entry['n']:,} "
            f"({worst_entry['peak_bytes'] / 2**20:.0f} MiB over a floor of "
            f"{worst_entry['floor_bytes'] / 2**20:.0f} MiB, input "
            f"{worst_entry['input_bytes'] / 2**20:.0f} MiB); "
            + ", ".join(f"N={e['n']:,}: {ratio:.2f}" for e, ratio in measured))
    if len(measured) < len(rows):
        text += f" ({len(rows) - len(measured)} N did not run)"
    return Target(name, goal, text, _status(worst <= MEMORY_FLOOR_MAX
                                            and len(measured) == len(rows)))


def below_lower_bound(section: dict) -> list[str]:
    """Entries whose measured peak is below the bytes they must hold (the method missed some)."""
    found = []
    for entry in section.get("entries", []):
        peak, bound = entry.get("peak_bytes"), entry.get("lower_bound_bytes")
        if entry.get("status") == "ok" and peak is not None and bound and peak < bound:
            found.append(f"{entry['implementation']} {MODE_NAMES[entry['mode']]} "
                         f"N={entry['n']:,}: {peak / 2**20:.0f} < {bound / 2**20:.0f} MiB")
    return found


def lower_bound_target(tag: str, section: dict) -> Target:
    """Every measured peak at or above its enl_core.cost lower bound."""
    name = f"{tag} every measured memory figure >= its lower bound (largest live tensors)"
    checked = [e for e in section.get("entries", []) if e.get("status") == "ok"
               and e.get("peak_bytes") is not None and e.get("lower_bound_bytes")]
    if not checked:
        return Target(name, "all", "no peak measured", "not measured")
    below = below_lower_bound(section)
    if below:
        return Target(name, "all", "below: " + "; ".join(below), "not met")
    return Target(name, "all", f"{len(checked)} figures checked", "met")


def speedup_row(tag: str, section: dict, framework: str, mode: str, n: int) -> Target:
    """ENL's speed-up over NL and attention at N, beside each multiply-add ratio
    (the speed-up a perfect implementation of both would show)."""
    name = f"{tag} ENL {MODE_NAMES[mode]} speed-up over NL and attention, N = {n:,}"
    enl = _find(section, "enl", mode, n)
    if enl is None or enl["status"] != "ok":
        return Target(name, "reported", _why(enl, "ENL"), "not measured")
    parts = []
    for competitor in COMPETITORS[framework]:
        other = _find(section, competitor, mode, n)
        if other is None:
            parts.append(f"{competitor}: absent")
            continue
        macs = f"MAC ratio {other['macs'] / enl['macs']:.1f}x"
        if other["status"] != "ok":
            parts.append(f"{competitor}: {other['status']} ({other.get('reason', '')}; {macs})")
            continue
        parts.append(f"{competitor} {other['median_s'] / enl['median_s']:.1f}x ({macs})")
    return Target(name, "reported", ", ".join(parts), "reported")


def detector_targets(variants: list[dict]) -> list[Target]:
    """+3ENL TD overheads and the profiler / cost-model agreement, per detector."""
    rows = detectors_lib.compare(variants, AGREEMENT_MAX)
    targets = []
    for detector in sorted({r["detector"] for r in rows}):
        enl = next((r for r in rows if r["detector"] == detector
                    and r["variant"] == "+3ENL, TD"), None)
        tag = f"[{detector}]"
        if enl is None or "flops_ratio" not in enl:
            why = "no baseline or +3ENL TD row ran" if enl is None or enl.get(
                "status", "ok") == "ok" else f"+3ENL TD {enl['status']}: {enl.get('reason', '')}"
            for what in ("FLOPs", "params"):
                targets.append(Target(f"{tag} +3ENL TD extra {what}", "<= 5% / 1%", why,
                                      "not measured"))
        else:
            targets.append(Target(f"{tag} +3ENL TD extra FLOPs (profiler)",
                                  f"<= {FLOPS_MAX:.0%}", f"{enl['flops_ratio'] - 1:+.2%}",
                                  _status(enl["flops_ratio"] - 1 <= FLOPS_MAX)))
            targets.append(Target(f"{tag} +3ENL TD extra params (built model)",
                                  f"<= {PARAMS_MAX:.0%}", f"{enl['params_ratio'] - 1:+.2%}",
                                  _status(enl["params_ratio"] - 1 <= PARAMS_MAX)))
        targets.append(eval_memory_bound_target(tag, [r for r in rows
                                                       if r["detector"] == detector]))
        checked = [r for r in rows if r["detector"] == detector and "agreement" in r]
        name = f"{tag} block FLOPs: TF profiler delta vs enl_core.cost"
        if not checked:
            targets.append(Target(name, f"within {AGREEMENT_MAX:.0%}", "no variant compared",
                                  "not measured"))
            continue
        text = ", ".join(f"{r['variant']} {r['agreement']:+.2%}" for r in checked)
        targets.append(Target(name, f"within {AGREEMENT_MAX:.0%}", text,
                              _status(all(r["agrees"] for r in checked))))
    return targets


def eval_memory_bound_target(tag: str, rows: list[dict]) -> Target:
    """Every variant's eval memory (whole process, above the loaded weights) at
    or above its blocks' largest live tensors (``detectors.blocks_cost``)."""
    name = f"{tag} eval memory (RSS above weights) >= blocks' lower bound"
    checked = [r for r in rows if "memory_below_bound" in r]
    if not checked:
        return Target(name, "every variant", "no whole-process figure", "not measured")
    below = [r for r in checked if r["memory_below_bound"]]
    text = ", ".join(
        f"{r['variant']} {r['forward_above_bytes'] / 2**20:,.0f} >= "
        f"{r['model_cost']['lower_bound_bytes'] * r.get('batch', 1) / 2**20:,.0f} MiB"
        for r in checked)
    return Target(name, "every variant", text, _status(not below))


def detectors_below_bound(variants: list[dict]) -> list[str]:
    """Variants whose eval memory figure is under their blocks' lower bound."""
    return [f"{r['detector']} {r['variant']}" for r in detectors_lib.compare(variants)
            if r.get("memory_below_bound")]


def training_targets(rows: list[dict], tag: str = "training") -> list[Target]:
    """+3ENL TD's training-step overheads and the step-memory lower bound."""
    targets = []
    goal = f"<= +{training_lib.OVERHEAD_MAX:.0%}"
    for what, overhead, why in training_lib.overhead_goals(rows):
        name = f"[{tag}] +3ENL TD {what} over the baseline (Mask R-CNN step)"
        if overhead is None:
            targets.append(Target(name, goal, why, "not measured"))
        else:
            targets.append(Target(name, goal, f"{overhead:+.1%}",
                                  _status(overhead <= training_lib.OVERHEAD_MAX)))
    checked = [r for r in training_lib.compare(rows) if "memory_below_bound" in r]
    name = f"[{tag}] step memory (RSS above loaded) >= blocks' saved affinities"
    if not checked:
        targets.append(Target(name, "every variant", "no variant ran", "not measured"))
    else:
        text = ", ".join(f"{r['variant']} {r['step_above_bytes'] / 2**20:,.0f} >= "
                         f"{r['lower_bound_bytes'] / 2**20:,.0f} MiB" for r in checked)
        targets.append(Target(name, "every variant", text,
                              _status(not any(r["memory_below_bound"] for r in checked))))
    return targets


def all_targets(results: dict) -> list[Target]:
    """Every target of a results dict (sections that did not run give "not measured")."""
    sections = results.get("sections", {})
    targets = []
    for framework in ("torch", "keras"):
        if framework in sections and "entries" in sections[framework]:
            targets += scaling_targets(framework, sections[framework])
        else:
            reason = sections.get(framework, {}).get("error", "section not run")
            targets.append(Target(f"[{framework}] block scaling targets", "see README",
                                  reason, "not measured"))
    for name, variant_targets, title, goal in (
            ("detectors", detector_targets, "cost-table targets", "see README"),
            ("training", training_targets, "training-step targets", "+3ENL TD <= +5%"),
            ("training_garden", lambda rows: training_targets(rows, "training_garden"),
             "Model Garden training-step targets", "+3ENL TD <= +5%")):
        variants = sections.get(name, {}).get("variants")
        if variants:
            targets += variant_targets(variants)
        else:
            targets.append(Target(f"[{name}] {title}", goal,
                                  sections.get(name, {}).get("error", "section not run"),
                                  "not measured"))
    return targets
