"""Timing and memory primitives (enl_experiments.bench.measure)."""

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from enl_experiments.bench import measure


def test_repeats_fill_the_budget_within_bounds():
    assert measure.repeats_for(0.1, 1.0, 3, 15) == 10
    assert measure.repeats_for(2.0, 1.0, 3, 15) == 3
    assert measure.repeats_for(1e-4, 1.0, 3, 15) == 15


def test_median_time_with_a_scripted_clock():
    # Each call takes the next duration on a fake clock: warm-up 5 s (one call,
    # longer than warmup_s), then 1, 3, 2 s -> median 2 s.
    durations = iter([5.0, 1.0, 3.0, 2.0])
    clock = {"now": 0.0}
    ticks = itertools.count()

    def timer():
        next(ticks)
        return clock["now"]

    def call():
        clock["now"] += next(durations)

    timing = measure.median_time(call, lambda: None, warmup_s=1.0, budget_s=6.0,
                                 min_repeats=3, max_repeats=3, timer=timer)
    assert timing["warmup_calls"] == 1
    assert timing["times_s"] == [1.0, 3.0, 2.0]
    assert timing["median_s"] == 2.0 and timing["min_s"] == 1.0 and timing["max_s"] == 3.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc high-water mark")
def test_host_peak_sees_a_temporary_allocation():
    size = 256 * 2**20

    def call():
        block = np.ones(size, dtype=np.uint8)  # touched: resident
        return int(block[::4096].sum())

    peak = measure.host_peak_above(call, lambda: None)
    assert peak is not None and size * 0.9 <= peak <= size * 1.5
    # A call that allocates nothing shows (almost) nothing.
    assert measure.host_peak_above(lambda: 1, lambda: None) < 32 * 2**20


def test_contention_reports_fields():
    with measure.Contention() as contention:
        sum(range(10000))
    assert contention.result["wall_s"] >= 0
    assert set(contention.result) >= {"other_cores_busy", "load_average_before"}


def test_median_time_without_warmup_times_min_repeats():
    calls = []
    timing = measure.median_time(lambda: calls.append(1), lambda: None, warmup_s=0.0,
                                 budget_s=100.0, min_repeats=3, max_repeats=3,
                                 min_warmup_calls=0)
    assert timing["warmup_calls"] == 0 and len(calls) == 3 == len(timing["times_s"])


def test_interleaved_times_alternate_the_calls():
    order = []
    times = measure.interleaved_times([lambda: order.append("a"), lambda: order.append("b")],
                                      lambda: None, warmup_s=0.0, budget_s=1.0,
                                      min_repeats=3, max_repeats=3)
    assert [len(t) for t in times] == [3, 3]
    assert order == ["a", "b"] * 4  # one warm-up round, three timed rounds


FAULTS = """
import json, resource, sys
import numpy as np
from enl_experiments.bench import measure
settings = measure.reuse_freed_heap() if sys.argv[1] == "reuse" else None
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.ones(2**23)  # 64 MiB, written, then freed
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del block
print(json.dumps({"settings": settings, "faults": faults}))
"""


def _faults(mode: str, **env) -> dict:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True,
                          env={**environment, **env}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_a_reused_heap_faults_a_large_block_in_once():
    """glibc's default maps each 64 MiB block afresh: every call faults its pages in
    again. With ``reuse_freed_heap`` only the first call does. (Counted in faults, not
    pages: numpy asks for transparent huge pages, 2 MiB a fault where the kernel agrees.)"""
    default = _faults("default")
    assert default["settings"] is None
    first, *later = default["faults"]
    assert first >= 32 and all(f >= first / 2 for f in later), default
    reused = _faults("reuse")
    assert reused["settings"] == {"mmap_threshold": 2**30, "trim_threshold": 2**31 - 1}
    first, *later = reused["faults"]
    assert first >= 32 and all(f <= first / 20 for f in later), reused


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_a_heap_setting_of_the_caller_is_kept():
    kept = _faults("reuse", MALLOC_MMAP_THRESHOLD_="131072")
    assert kept["settings"] is None


def test_the_heap_description_names_who_chose_the_heap(monkeypatch):
    for name in measure.GLIBC_HEAP_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert measure.heap_description(None) == "the allocator's default"
    assert "reuse" in measure.heap_description({"mmap_threshold": 2**30})
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert "131072" in measure.heap_description(None)
