"""The block-scaling section, framework-neutral: sgemm reference, then every case.

A framework plugs in through a small backend object (see
:mod:`enl_experiments.bench.torch_backend` and ``keras_backend``) with:

    name, device, info() -> dict, sync(), memory_limit_bytes() -> int | None,
    free_bytes() -> int | None, peak_above(call) -> int | None,
    matmul(m, k, n) -> call, implementations() -> {name: reason_or_None},
    flash_attention -> bool, block(case) -> call, release()

It runs in its own process (one framework per process, never two at once).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
import traceback

from enl_experiments.bench import cases as cases_lib
from enl_experiments.bench import measure
from enl_experiments.bench.config import BLOCK_MODES, GIB, BenchConfig

PEAK_SHAPE = (2048, 2048, 2048)
PROFILE_SIDE = 128


def _time(backend, call, config: BenchConfig, budget_s: float | None = None) -> dict:
    return measure.median_time(call, backend.sync, config.warmup_s,
                               config.entry_budget_s if budget_s is None else budget_s,
                               config.min_repeats, config.max_repeats)


def chain_shapes(side: int, mode: str, config: BenchConfig) -> list[tuple[int, int, int]]:
    """ENL's matmul shapes at N = side^2 (plus their backward products for fwd+bwd)."""
    forward = cases_lib.enl_matmul_shapes(side * side * config.batch, config.channels,
                                          config.inter_channels)
    if mode == "forward":
        return forward
    return forward + [b for s in forward for b in cases_lib.backward_shapes(s)]


def chain_call(backend, side: int, mode: str, config: BenchConfig):
    """One call running ENL's whole matmul chain back to back; returns (call, macs)."""
    shapes = chain_shapes(side, mode, config)
    products = [backend.matmul(*shape) for shape in shapes]

    def call():
        for product in products:
            result = product()
        return result

    return call, sum(a * b * c for a, b, c in shapes)


def sgemm_peak(backend, config: BenchConfig, log) -> dict:
    """float32 matmul throughput of one large square product (the machine's ceiling)."""
    m, k, n = PEAK_SHAPE
    seconds = _time(backend, backend.matmul(*PEAK_SHAPE), config)["median_s"]
    peak = {"shape": list(PEAK_SHAPE), "seconds": seconds, "gflops": 2 * m * k * n / seconds / 1e9}
    log(f"[{backend.name}] sgemm {m}x{k}x{n}: {peak['gflops']:.1f} GFLOP/s")
    return peak


def run_case(backend, case: cases_lib.Case, config: BenchConfig) -> dict:
    """Times one case and measures its peak memory; never raises (errors are recorded)."""
    entry = dataclasses.asdict(case) | {"n": case.n}
    if case.status != "run":
        return entry
    try:
        call = backend.block(case)
        if cases_lib.IMPLEMENTATIONS[case.implementation][0] == "enl":
            # ENL and its sgemm chain alternate, round by round, so that load
            # drifting during the run moves both sides of the ratio alike.
            reference, reference_macs = chain_call(backend, case.side, case.mode, config)
            block_times, reference_times = measure.interleaved_times(
                [call, reference], backend.sync, config.warmup_s, 2 * config.entry_budget_s,
                config.min_repeats, config.max_repeats)
            del reference
            seconds = statistics.median(reference_times)
            ratios = [(case.macs / b) / (reference_macs / r)
                      for b, r in zip(block_times, reference_times, strict=True)]
            entry["sgemm_paired"] = {"macs": reference_macs, "seconds": seconds,
                                     "gflops": 2 * reference_macs / seconds / 1e9,
                                     "times_s": reference_times,
                                     "efficiency_median_of_rounds": statistics.median(ratios)}
            timing = {"median_s": statistics.median(block_times), "min_s": min(block_times),
                      "max_s": max(block_times), "times_s": block_times,
                      "warmup_calls": None}
            peak = backend.peak_above(call)
        elif 2 * case.macs > config.entry_budget_s * 20e9:
            # A heavy entry (over the budget even at 20 GFLOP/s): its first call
            # measures the peak and is the warm-up, then min_repeats calls are timed.
            peak = backend.peak_above(call)
            timing = measure.median_time(call, backend.sync, 0.0, config.entry_budget_s,
                                         config.min_repeats, config.min_repeats,
                                         min_warmup_calls=0)
        else:
            timing = _time(backend, call, config)
            peak = backend.peak_above(call)
        del call
    except Exception as error:  # noqa: BLE001 - an entry that fails is reported, not fatal
        backend.release()
        entry.update(status="error", reason=f"{type(error).__name__}: {str(error)[:300]}",
                     traceback=traceback.format_exc(limit=3))
        return entry
    backend.release()
    entry.update(timing, status="ok", peak_bytes=peak,
                 gflops=2 * case.macs / timing["median_s"] / 1e9)
    return entry


def run_section(backend, config: BenchConfig, log=print) -> dict:
    """The whole scaling section for one backend; returns JSON-ready results."""
    started = time.time()
    info = backend.info()
    log(f"[{backend.name}] {info}")
    sgemm = {"peak": sgemm_peak(backend, config, log), "by_side": {}}
    available = {name: reason for name, reason in backend.implementations().items()
                 if not config.implementations or name in config.implementations}
    limit = backend.memory_limit_bytes() or int(config.memory_limit_gib * GIB)
    entries = []
    for implementation, unavailable in available.items():
        failed_modes: set[str] = set()
        last_measured: dict[str, tuple[int, float]] = {}
        for case in cases_lib.build_cases(backend.name, [implementation], config,
                                          backend.flash_attention):
            if unavailable:
                case = dataclasses.replace(case, status="unavailable", reason=unavailable)
            elif case.mode in failed_modes:
                case = dataclasses.replace(case, status="skipped",
                                           reason="failed at a smaller N")
            else:
                case = cases_lib.classify(case, limit, backend.free_bytes(),
                                          sgemm["peak"]["gflops"] * 1e9, config.max_call_s,
                                          config.always_run_n, last_measured.get(case.mode),
                                          config.hard_max_call_s)
            entry = run_case(backend, case, config)
            if entry["status"] == "ok":
                last_measured[case.mode] = (case.macs, entry["median_s"])
            if implementation == "enl" and "sgemm_paired" in entry:
                sgemm["by_side"].setdefault(str(case.side), {})[case.mode] = entry["sgemm_paired"]
            if entry["status"] == "error":
                failed_modes.add(case.mode)
            entries.append(entry)
            log(format_entry(backend.name, entry))
    return {"framework": backend.name, "info": info, "memory_limit_bytes": limit,
            "sgemm": sgemm, "entries": entries,
            "profile": profile_enl(backend, config, available.get("enl", "not run"), log),
            "seconds": time.time() - started}


def profile_side(sides) -> int:
    """The grid profiled: 128 x 128 (N = 16,384, where the targets start) or the
    largest side below it, else the smallest."""
    below = [side for side in sides if side <= PROFILE_SIDE]
    return max(below) if below else min(sides)


def profile_sides(sides) -> list[int]:
    """:func:`profile_side`, then the largest side when it is larger: the
    efficiency targets hold from N = 16,384 up, and where the time goes can
    change with N (memory traffic grows with it, the matmuls do not get wider)."""
    first, largest = profile_side(sides), max(sides)
    return [first] if largest == first else [first, largest]


def profile_enl(backend, config: BenchConfig, unavailable, log) -> dict:
    """Op-level profile of ENL, forward and forward+backward; errors are recorded."""
    if unavailable:
        return {"error": f"ENL not profiled: {unavailable}"}
    result = {}
    for index, side in enumerate(profile_sides(config.sides)):
        for mode in BLOCK_MODES:
            # The first grid keeps the plain mode as its key (older results read alike).
            key = mode if index == 0 else f"{mode}@{side}"
            try:
                result[key] = backend.profile(side, mode == "forward_backward")
            except Exception as error:  # noqa: BLE001 - a failed profile is reported
                result[key] = {"error": f"N = {side * side:,}: {type(error).__name__}: "
                                        f"{str(error)[:300]}"}
                continue
            top = ", ".join(f"{row['op']} {row['share']:.0%}" for row in result[key]["top"][:5])
            log(f"[{backend.name}] ENL profile N={side * side} {mode}: {top}")
    return result


def format_entry(framework: str, entry: dict) -> str:
    """One log line per entry."""
    head = (f"[{framework}] {entry['implementation']:<22} N={entry['n']:>6} "
            f"{entry['mode']:<16}")
    if entry["status"] != "ok":
        return f"{head} {entry['status']}: {entry['reason']}"
    peak = entry.get("peak_bytes")
    peak_text = "n/a" if peak is None else f"{peak / 2**20:.0f} MiB"
    text = (f"{head} {entry['median_s'] * 1e3:9.2f} ms  {entry['gflops']:7.1f} GFLOP/s  "
            f"peak +{peak_text}")
    if "sgemm_paired" in entry:
        paired = entry["sgemm_paired"]
        efficiency = paired.get("efficiency_median_of_rounds", entry["gflops"] / paired["gflops"])
        text += f"  sgemm {paired['gflops']:.1f} GFLOP/s -> {efficiency:.0%}"
    return text
