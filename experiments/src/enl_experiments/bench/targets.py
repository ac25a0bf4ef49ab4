"""The bench's targets, checked against one run's results: met / not met / not measured.

Every target yields a row with the measured number, whatever it is; a target
whose entries did not run says why ("not measured"), it is never left out.
"""

from __future__ import annotations

import dataclasses
import itertools

from enl_experiments.bench import detectors as detectors_lib
from enl_experiments.bench.fitting import loglog_slope

EFFICIENCY_N = 16384
EFFICIENCY = {"forward": 0.75, "forward_backward": 0.60}
SLOPE_RANGE = (4096, 65536)
SLOPE_MAX = 1.1
MEMORY_N = 65536
MEMORY_MAX = 8.0
SPEEDUP_N = 16384
SPEEDUP_MIN = 25.0
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
    for variant, (mode, goal) in itertools.product(variants, EFFICIENCY.items()):
        label = "ENL" if variant == "enl" else variant
        name = f"{tag} {label} {MODE_NAMES[mode]} efficiency at N >= {EFFICIENCY_N:,}"
        rows = [(e["n"], efficiency(e, section["sgemm"]))
                for e in _entries(section, variant, mode) if e["n"] >= EFFICIENCY_N]
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
        low, high = SLOPE_RANGE
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
        name = f"{tag} ENL {MODE_NAMES[mode]} peak memory above input, N = {MEMORY_N:,}"
        entry = _find(section, "enl", mode, MEMORY_N)
        if entry is None or entry["status"] != "ok" or entry.get("peak_bytes") is None:
            targets.append(Target(name, f"<= {MEMORY_MAX:g} x input",
                                  _why(entry, f"ENL N={MEMORY_N:,}"), "not measured"))
            continue
        ratio = entry["peak_bytes"] / entry["input_bytes"]
        targets.append(Target(name, f"<= {MEMORY_MAX:g} x input",
                              f"{ratio:.1f} x ({entry['peak_bytes'] / 2**20:.0f} MiB over a "
                              f"{entry['input_bytes'] / 2**20:.0f} MiB input)",
                              _status(ratio <= MEMORY_MAX)))
    for mode in EFFICIENCY:
        name = f"{tag} ENL {MODE_NAMES[mode]} speed-up over NL and attention, N = {SPEEDUP_N:,}"
        enl = _find(section, "enl", mode, SPEEDUP_N)
        if enl is None or enl["status"] != "ok":
            targets.append(Target(name, f">= {SPEEDUP_MIN:g}x", _why(enl, "ENL"),
                                  "not measured"))
            continue
        parts, ratios, missing = [], [], False
        for competitor in COMPETITORS[framework]:
            other = _find(section, competitor, mode, SPEEDUP_N)
            if other is None or other["status"] != "ok":
                parts.append(f"{competitor}: {other['status'] if other else 'absent'}"
                             + (f" ({other.get('reason', '')})" if other else ""))
                missing = True
                continue
            ratio = other["median_s"] / enl["median_s"]
            ratios.append(ratio)
            parts.append(f"{competitor} {ratio:.1f}x")
        if ratios and min(ratios) < SPEEDUP_MIN:
            status = "not met"
        elif missing or not ratios:
            status = "not measured"  # met where measured; a competitor did not run
        else:
            status = "met"
        targets.append(Target(name, f">= {SPEEDUP_MIN:g}x", ", ".join(parts), status))
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
    variants = sections.get("detectors", {}).get("variants")
    if variants:
        targets += detector_targets(variants)
    else:
        targets.append(Target("[detectors] cost-table targets", "see README",
                              sections.get("detectors", {}).get("error", "section not run"),
                              "not measured"))
    return targets
