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
import time
import traceback

from enl_experiments.bench import cases as cases_lib
from enl_experiments.bench import measure
from enl_experiments.bench.config import BLOCK_MODES, GIB, BenchConfig

PEAK_SHAPE = (2048, 2048, 2048)


def _time(backend, call, config: BenchConfig) -> dict:
    return measure.median_time(call, backend.sync, config.warmup_s, config.entry_budget_s,
                               config.min_repeats, config.max_repeats)


def chain_shapes(side: int, mode: str, config: BenchConfig) -> list[tuple[int, int, int]]:
    """ENL's matmul shapes at N = side^2 (plus their backward products for fwd+bwd)."""
    forward = cases_lib.enl_matmul_shapes(side * side * config.batch, config.channels,
                                          config.inter_channels)
    if mode == "forward":
        return forward
    return forward + [b for s in forward for b in cases_lib.backward_shapes(s)]


def chain_reference(backend, side: int, mode: str, config: BenchConfig) -> dict:
    """Times ENL's matmul chain now: the paired reference of one ENL entry."""
    shapes = chain_shapes(side, mode, config)
    total = 0.0
    for shape in shapes:
        call = backend.matmul(*shape)
        total += _time(backend, call, config)["median_s"]
        del call
    macs = sum(a * b * c for a, b, c in shapes)
    return {"macs": macs, "seconds": total, "gflops": 2 * macs / total / 1e9}


def sgemm_reference(backend, config: BenchConfig, log) -> dict:
    """float32 matmul throughput: one large square product and, per N, ENL's own shapes.

    Returns:
        ``{"peak": {...}, "by_side": {side: {mode: {"macs", "seconds", "gflops", "shapes"}}}}``
        where the forward_backward entry adds each product's two backward matmuls.
    """
    timings: dict[tuple[int, int, int], float] = {}

    def seconds(shape):
        if shape not in timings:
            call = backend.matmul(*shape)
            timings[shape] = _time(backend, call, config)["median_s"]
            del call
        return timings[shape]

    m, k, n = PEAK_SHAPE
    peak_s = seconds(PEAK_SHAPE)
    result = {"peak": {"shape": list(PEAK_SHAPE), "seconds": peak_s,
                       "gflops": 2 * m * k * n / peak_s / 1e9}, "by_side": {}}
    for side in config.sides:
        per_mode = {}
        for mode in BLOCK_MODES:
            shapes = chain_shapes(side, mode, config)
            macs = sum(a * b * c for a, b, c in shapes)
            total = sum(seconds(s) for s in shapes)
            per_mode[mode] = {"macs": macs, "seconds": total, "gflops": 2 * macs / total / 1e9,
                              "shapes": [list(s) for s in shapes]}
        result["by_side"][str(side)] = per_mode
        log(f"[{backend.name}] sgemm N={side * side}: "
            f"fwd {per_mode['forward']['gflops']:.1f} GFLOP/s, "
            f"fwd+bwd {per_mode['forward_backward']['gflops']:.1f} GFLOP/s")
    return result


def run_case(backend, case: cases_lib.Case, config: BenchConfig) -> dict:
    """Times one case and measures its peak memory; never raises (errors are recorded)."""
    entry = dataclasses.asdict(case) | {"n": case.n}
    if case.status != "run":
        return entry
    try:
        if cases_lib.IMPLEMENTATIONS[case.implementation][0] == "enl":
            # Measured next to the entry, so that load drifting during the run
            # moves both sides of the efficiency ratio alike.
            entry["sgemm_paired"] = chain_reference(backend, case.side, case.mode, config)
        call = backend.block(case)
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
    sgemm = sgemm_reference(backend, config, log)
    available = backend.implementations()
    limit = backend.memory_limit_bytes() or int(config.memory_limit_gib * GIB)
    entries = []
    for implementation, unavailable in available.items():
        failed_modes: set[str] = set()
        for case in cases_lib.build_cases(backend.name, [implementation], config,
                                          backend.flash_attention):
            if unavailable:
                case = dataclasses.replace(case, status="unavailable", reason=unavailable)
            elif case.mode in failed_modes:
                case = dataclasses.replace(case, status="skipped",
                                           reason="failed at a smaller N")
            else:
                case = cases_lib.classify(case, limit, backend.free_bytes(),
                                          sgemm["peak"]["gflops"] * 1e9, config.max_call_s)
            entry = run_case(backend, case, config)
            if entry["status"] == "error":
                failed_modes.add(case.mode)
            entries.append(entry)
            log(format_entry(backend.name, entry))
    return {"framework": backend.name, "info": info, "memory_limit_bytes": limit,
            "sgemm": sgemm, "entries": entries, "seconds": time.time() - started}


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
        paired = entry["sgemm_paired"]["gflops"]
        text += f"  sgemm {paired:.1f} GFLOP/s -> {entry['gflops'] / paired:.0%}"
    return text
