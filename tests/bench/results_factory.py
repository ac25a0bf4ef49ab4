"""Builds results dicts in the bench's JSON layout for the report/target tests.

The numbers are chosen by each test to sit on one side of a target; the
layout is the one ``enl_experiments.bench.scaling.run_case`` writes.
"""

from enl_experiments.bench import cases
from enl_experiments.bench.config import BenchConfig

CONFIG = BenchConfig()


def entry(implementation, side, mode, seconds=None, status="ok", peak_ratio=3.0,
          sgemm_gflops=None, reason="", floor_ratio=None):
    """One entry; its peak is ``peak_ratio`` x the input (at least its lower
    bound), or ``floor_ratio`` x its live-tensor floor when given (ENL)."""
    (case,) = [c for c in cases.build_cases("torch", [implementation], CONFIG)
               if c.side == side and c.mode == mode]
    row = {"framework": "torch", "implementation": implementation, "side": side, "n": side**2,
           "mode": mode, "macs": case.macs, "input_bytes": case.input_bytes,
           "predicted_bytes": case.predicted_bytes, "status": status, "reason": reason,
           "lower_bound_bytes": case.lower_bound_bytes, "floor_bytes": case.floor_bytes}
    if status == "ok":
        peak = (max(peak_ratio * case.input_bytes, case.lower_bound_bytes)
                if floor_ratio is None else floor_ratio * case.floor_bytes)
        row.update(median_s=seconds, min_s=seconds, max_s=seconds, times_s=[seconds],
                   gflops=2 * case.macs / seconds / 1e9, peak_bytes=int(peak))
        if sgemm_gflops is not None:
            row["sgemm_paired"] = {"macs": 1, "seconds": 1.0, "gflops": sgemm_gflops}
    return row


def enl_seconds(side, mode, gflops):
    """The time at which ENL runs at ``gflops``."""
    (case,) = [c for c in cases.build_cases("torch", ["enl"], CONFIG)
               if c.side == side and c.mode == mode]
    return 2 * case.macs / (gflops * 1e9)


def scaling_section(enl_gflops=90.0, sgemm_gflops=100.0, competitor_factor=40.0,
                    nl_status_65536="infeasible", enl_floor_ratio=1.05):
    """A section where ENL runs at ``enl_gflops`` against a ``sgemm_gflops`` reference."""
    entries = []
    for side in CONFIG.sides:
        for mode in ("forward", "forward_backward"):
            seconds = enl_seconds(side, mode, enl_gflops)
            entries.append(entry("enl", side, mode, seconds, sgemm_gflops=sgemm_gflops,
                                 floor_ratio=enl_floor_ratio))
            for other in ("nl_dot_product", "nl_embedded_gaussian", "sdpa"):
                if side == 256 and other != "sdpa":
                    entries.append(entry(other, side, mode, status=nl_status_65536,
                                         reason="needs ~32 GiB"))
                elif side == 256:
                    entries.append(entry(other, side, mode, status="skipped",
                                         reason="predicted 22 s per call"))
                else:
                    entries.append(entry(other, side, mode, competitor_factor * seconds))
    by_side = {str(s): {m: {"macs": 1, "seconds": 1.0, "gflops": sgemm_gflops}
                        for m in ("forward", "forward_backward")} for s in CONFIG.sides}
    return {"framework": "torch", "info": {"torch": "x", "intra_op_threads": 2},
            "memory_limit_bytes": 24 * 2**30,
            "sgemm": {"peak": {"shape": [2048] * 3, "seconds": 0.1, "gflops": 120.0},
                      "by_side": by_side},
            "entries": entries, "run": {"wall_s": 100.0, "other_cores_busy": 0.1}}


def detector_variants(enl_flops_ratio=1.04, enl_params_delta=400_000, agreement=0.005,
                      nl_td_memory=1_200_000_000):
    """Four variants of one detector; the ENL block delta is off by ``agreement``;
    +3NL TD's eval memory is ``nl_td_memory`` over a lower bound of 800 MB."""
    base_flops, base_params = 600e9, 44_000_000
    rows = []
    for variant, model_macs, params, memory, bound in (
            ("baseline", 0, 0, 400_000_000, 0),
            ("+1NL, BU", 8e9, 2_100_000, 450_000_000, 60_000_000),
            ("+3ENL, TD", None, enl_params_delta, 410_000_000, 15_000_000),
            ("+3NL, TD", 50e9, 400_000, nl_td_memory, 800_000_000)):
        if model_macs is None:
            model_macs = (enl_flops_ratio - 1) * base_flops / 2 / (1 + agreement)
        rows.append({"detector": "fasterrcnn", "variant": variant, "experiment": variant,
                     "input_size": [832, 1088], "params": base_params + params,
                     "profiler_flops": base_flops + 2 * model_macs * (
                         1 + agreement if variant == "+3ENL, TD" else 1),
                     "model_cost": {"macs": int(model_macs), "params": params, "blocks": [],
                                    "lower_bound_bytes": bound},
                     "batch": 1, "forward_above_bytes": memory,
                     "allocator_peak_bytes": 1_500_000_000, "process_peak_bytes": 3e9,
                     "forward_s": 40.0, "build_s": 20.0})
    return rows


def training_rows(enl_time_ratio=1.03, enl_memory_ratio=1.04, nl_td_above=4 * 2**30):
    """The training table of four variants at 800 x 1088 (lower bounds from the cost model)."""
    from enl_experiments.bench import training

    base_s, base_bytes = 20.0, 3 * 2**30
    figures = {"baseline": (base_s, base_bytes), "+1NL, BU": (1.2 * base_s, 1.1 * base_bytes),
               "+3ENL, TD": (enl_time_ratio * base_s, enl_memory_ratio * base_bytes),
               "+3NL, TD": (3 * base_s, nl_td_above)}
    return [{"variant": variant, "status": "ok", "input_size": [800, 1088], "batch": 1,
             "step_s": seconds, "step_above_bytes": int(above),
             "lower_bound_bytes": training.lower_bound_bytes(variant, 800, 1088),
             "predicted_block_bytes": training.predicted_block_bytes(variant, 800, 1088)}
            for variant, (seconds, above) in figures.items()]
