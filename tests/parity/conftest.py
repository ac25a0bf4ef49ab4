"""Session fixtures of the parity suite: the worker pool and the batch results.

The driver (this pytest process) imports NumPy, Hypothesis and enl_core only;
every implementation runs in its own worker (``parity_pool``).
"""

from __future__ import annotations

import numpy as np
import parity_cases
import parity_protocol as protocol
import pytest
from parity_pool import WorkerError, WorkerPool

_POOLS: list[WorkerPool] = []


@pytest.fixture(scope="session")
def parity_pool(tmp_path_factory):
    """One worker per implementation for the whole session."""
    pool = WorkerPool(tmp_path_factory.mktemp("parity"))
    _POOLS.append(pool)
    yield pool
    pool.close()


def pytest_terminal_summary(terminalreporter):
    """Where the session's time went, per worker (start-up, each job type)."""
    for pool in _POOLS:
        terminalreporter.write_sep("-", "parity workers (seconds inside each worker)")
        terminalreporter.write_line(pool.timing_report())


class Results:
    """Result files of a batch: ``get(implementation, key)`` -> arrays, or a
    failure naming why that implementation has no result for ``key``."""

    def __init__(self, paths: dict, answers: dict, describe: dict, inputs: dict):
        self.paths, self.answers, self.describe, self.inputs = paths, answers, describe, inputs

    def get(self, implementation: str, key: str) -> dict[str, np.ndarray]:
        answer = self.answers[implementation]
        if isinstance(answer, WorkerError):
            pytest.fail(f"{implementation}: no result for {key}: {answer}", pytrace=False)
        _, arrays = protocol.read_npz(self.paths[implementation, key])
        if "error" in arrays:
            pytest.fail(f"{implementation} failed on {key} ({self.describe[key]}):\n"
                        f"{arrays['error']}", pytrace=False)
        return arrays


def run_batch(pool: WorkerPool, kind: str, cases, arrays_of, implementations) -> Results:
    """Writes every case file, has every implementation run them all in one
    job, and returns the results."""
    directory = pool.workdir / kind
    directory.mkdir()
    paths, inputs, describe = {}, {}, {}
    jobs = {name: {"type": kind, "cases": []} for name in implementations}
    for key, spec in cases:
        case_path = inputs[key] = directory / f"{key}.npz"
        protocol.write_npz(case_path, spec, **arrays_of(spec))
        describe[key] = f"{protocol.describe(spec)}, case file {case_path}"
        for name, job in jobs.items():
            paths[name, key] = directory / f"{key}.{name}.npz"
            job["cases"].append((str(case_path), str(paths[name, key])))
    return Results(paths, pool.run(jobs), describe, inputs)


@pytest.fixture(scope="session")
def block_results(parity_pool):
    """Every Hypothesis-drawn block case, run once by every implementation."""
    return run_batch(parity_pool, "blocks", parity_cases.block_cases(), protocol.case_arrays,
                     parity_pool.workers)


@pytest.fixture(scope="session")
def top_down_results(parity_pool):
    """Every top-down stream case, run by the reference and both decoders."""
    return run_batch(parity_pool, "top_down", parity_cases.top_down_cases(),
                     protocol.top_down_arrays, protocol.TOP_DOWN_IMPLEMENTATIONS)
