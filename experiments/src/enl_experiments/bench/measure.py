"""Framework-neutral timing and peak-memory primitives.

Times are wall-clock seconds of ``call(); sync()``: the framework passes a
``sync`` that waits for its device (a no-op on CPU, ``cuda.synchronize`` on
GPU), so a median is of completed work. Peak memory on CPU is the process's
resident high-water mark (``VmHWM``), reset just before the measured call
through ``/proc/self/clear_refs`` (Linux >= 4.0) and taken above the resident
size at that moment, after returning freed heap pages to the OS
(``malloc_trim``) so that reused pages do not hide an allocation.
"""

from __future__ import annotations

import ctypes
import gc
import os
import statistics
import time
from collections.abc import Callable

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _status_kib(field: str) -> int | None:
    try:
        with open(_STATUS) as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    """Current resident set size of this process, or None off Linux."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def high_water_bytes() -> int | None:
    """Resident high-water mark of this process since start or the last reset."""
    kib = _status_kib("VmHWM")
    return None if kib is None else kib * 1024


def reset_high_water() -> bool:
    """Resets VmHWM to the current RSS; False when the kernel does not allow it."""
    try:
        with open(_CLEAR_REFS, "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def _glibc_function(name: str):
    """``name`` from glibc, or None where libc is not glibc."""
    try:
        return getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Collects garbage and hands glibc's free heap pages back to the OS."""
    gc.collect()
    trim = _glibc_function("malloc_trim")
    if trim is not None:  # not glibc: RSS may overstate the baseline, never the peak
        trim(0)


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
REUSED_HEAP_BYTES = 2**30  # blocks below this come from the heap and are reused
GLIBC_HEAP_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def reuse_freed_heap() -> dict | None:
    """Makes glibc keep freed blocks below 1 GiB for reuse; returns what it set.

    By default glibc maps every block above its mmap threshold (at most
    32 MiB) afresh and unmaps it on free, so each call of a block at
    N = 65,536 page-faults and zeroes its large tensors again (192 MiB of
    faults per ENL forward, measured); a GPU's caching allocator never does.
    This raises the mmap threshold to 1 GiB and the trim threshold to 2 GiB.
    :func:`release_free_memory` still returns the free heap before a memory
    measurement. The setting holds for the rest of the process. Returns None
    (and changes nothing) where libc is not glibc or the process set one of
    :data:`GLIBC_HEAP_VARIABLES` (see :func:`heap_description`).
    """
    if any(name in os.environ for name in GLIBC_HEAP_VARIABLES):
        return None
    mallopt = _glibc_function("mallopt")
    if mallopt is None:
        return None
    settings = {"mmap_threshold": (_M_MMAP_THRESHOLD, REUSED_HEAP_BYTES),
                "trim_threshold": (_M_TRIM_THRESHOLD, 2**31 - 1)}
    for name, (parameter, value) in settings.items():
        if mallopt(parameter, value) != 1:
            raise RuntimeError(f"glibc refused mallopt {name}={value}")
    return {name: value for name, (_, value) in settings.items()}


def heap_description(settings: dict | None) -> str:
    """What a report says of the heap, given :func:`reuse_freed_heap`'s answer."""
    if settings:
        return f"glibc keeps freed blocks for reuse ({settings})"
    chosen = {name: os.environ[name] for name in GLIBC_HEAP_VARIABLES if name in os.environ}
    if chosen:
        return f"glibc as the environment sets it ({chosen})"
    return "the allocator's default"


TF_CPU_BFC = "TF_CPU_ALLOCATOR_USE_BFC"


def keep_tf_cpu_allocator_stats() -> None:
    """Asks TensorFlow for its BFC CPU allocator, which keeps statistics.

    TensorFlow's default CPU allocator keeps none unless oneDNN is on, and it
    turns oneDNN on by default only on some CPUs. The BFC allocator changes
    where tensors live, not the kernels. The variable is read when TensorFlow
    loads, so call this before the import; a value already set is kept.
    """
    os.environ.setdefault(TF_CPU_BFC, "true")


def tf_allocator_stats(tf, device: str) -> bool:
    """Whether TensorFlow keeps allocator statistics for ``device`` ("CPU:0", "GPU:0").

    A GPU always has them. On CPU only the BFC allocator does: with oneDNN
    (on by default only on some CPUs, not on this project's AMD EPYC machines,
    which lack AVX-512) or with :func:`keep_tf_cpu_allocator_stats`; elsewhere
    ``reset_memory_stats`` raises ValueError. Resets the statistics when they
    exist. ``tf`` is the imported module (this module imports no framework).
    """
    try:
        tf.config.experimental.reset_memory_stats(device)
    except ValueError:
        return False
    return True


def host_peak_above(call: Callable[[], object], sync: Callable[[], None]) -> int | None:
    """Process high-water during ``call`` above the RSS just before it, in bytes.

    Returns None when the high-water mark cannot be reset (not Linux).
    """
    release_free_memory()
    if not reset_high_water():
        return None
    before = rss_bytes()
    result = call()
    sync()
    peak = high_water_bytes()
    del result
    if before is None or peak is None:
        return None
    return max(peak - before, 0)


def repeats_for(seconds_per_call: float, budget_s: float, min_repeats: int,
                max_repeats: int) -> int:
    """Timed calls that fill ``budget_s``, clamped to [min_repeats, max_repeats]."""
    if seconds_per_call <= 0:
        return max_repeats
    fits = int(budget_s / seconds_per_call + 1e-9)  # 1.0 / 0.1 is 10, not 9.999...
    return min(max(fits, min_repeats), max_repeats)


def median_time(call: Callable[[], object], sync: Callable[[], None], warmup_s: float,
                budget_s: float, min_repeats: int, max_repeats: int,
                timer: Callable[[], float] = time.perf_counter,
                min_warmup_calls: int = 1) -> dict:
    """Median seconds of ``call`` after warm-up.

    Warm-up runs at least ``min_warmup_calls`` calls (one by default: it
    compiles, allocates, fills caches) and keeps going for ``warmup_s``; the
    last warm-up time sets how many timed calls fit in ``budget_s`` (with no
    warm-up call, ``min_repeats`` calls are timed).

    Returns:
        ``{"median_s", "min_s", "max_s", "times_s", "warmup_calls"}``.
    """
    warmup_calls, started, last = 0, timer(), float("inf")
    while warmup_calls < min_warmup_calls or timer() - started < warmup_s:
        begin = timer()
        result = call()
        sync()
        last = timer() - begin
        del result
        warmup_calls += 1
        if last > warmup_s:
            break
    times = []
    for _ in range(repeats_for(last, budget_s, min_repeats, max_repeats)):
        begin = timer()
        result = call()
        sync()
        times.append(timer() - begin)
        del result
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "times_s": times, "warmup_calls": warmup_calls}


def cpu_busy_seconds() -> float | None:
    """Core-seconds all processes on the machine have spent busy since boot."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU seconds of this process's finished children (the bench workers)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Contention:
    """How many cores *other* processes kept busy while a section ran.

    Busy core-seconds of the whole machine (``/proc/stat``) minus the
    workers' own CPU time, over the wall time. On the 2-core machine a value
    near 0 means the numbers are clean; 1 means half the machine was taken.
    """

    def __enter__(self):
        self.wall = time.perf_counter()
        self.busy = cpu_busy_seconds()
        self.ours = children_cpu_seconds()
        self.load = list(os.getloadavg())
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.wall
        busy = cpu_busy_seconds()
        ours = children_cpu_seconds() - self.ours
        others = None
        if busy is not None and self.busy is not None and wall > 0:
            others = max((busy - self.busy - ours) / wall, 0.0)
        self.result = {"wall_s": wall, "worker_cpu_s": ours, "other_cores_busy": others,
                       "load_average_before": self.load,
                       "load_average_after": list(os.getloadavg())}
        return False


def interleaved_times(calls: list[Callable[[], object]], sync: Callable[[], None],
                      warmup_s: float, budget_s: float, min_repeats: int, max_repeats: int,
                      timer: Callable[[], float] = time.perf_counter) -> list[list[float]]:
    """Times several calls in alternation: call 0, call 1, ..., call 0, call 1, ...

    On a shared machine the load drifts; alternating puts each round of calls
    under the same load, so per-round ratios (ENL over its sgemm reference)
    are steadier than ratios of separately taken medians.

    Returns:
        one list of seconds per call, ``rounds`` long each.
    """
    def timed(call):
        begin = timer()
        result = call()
        sync()
        elapsed = timer() - begin
        del result
        return elapsed

    started, rounds_done, last = timer(), 0, 0.0
    while rounds_done == 0 or timer() - started < warmup_s:
        last = sum(timed(call) for call in calls)
        rounds_done += 1
        if last > warmup_s:
            break
    rounds = repeats_for(last, budget_s, min_repeats, max_repeats)
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for index, call in enumerate(calls):
            times[index].append(timed(call))
    return times
