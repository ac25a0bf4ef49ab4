"""The driver's side of the workers: one long-lived process per implementation.

All workers start at once (their framework imports, seconds each, overlap),
then every batch of jobs is sent to all of them before any answer is awaited,
so the implementations compute side by side. Each worker gets one compute
thread: several run at once on few cores.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import pathlib
import queue
import subprocess
import sys
import threading

from parity_protocol import IMPLEMENTATIONS, MARKER

HERE = pathlib.Path(__file__).resolve().parent
# Generous: framework imports take ~20 s on a loaded 2-core machine.
STARTUP_TIMEOUT_S = 300
JOB_TIMEOUT_S = 600
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                 "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


class WorkerError(RuntimeError):
    """A worker could not run a job (import failure, crash, traceback)."""


class Worker:
    """One implementation's process, answering JSON jobs on stdin."""

    def __init__(self, name: str, workdir: pathlib.Path):
        script, environment = IMPLEMENTATIONS[name]
        self.name = name
        self.log_path = workdir / f"{name}.log"
        env = {**os.environ, **SINGLE_THREAD, **environment,
               "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONUNBUFFERED": "1"}
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / script)], cwd=HERE, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
        self._answers: queue.Queue = queue.Queue()
        self._stdout_tail: collections.deque = collections.deque(maxlen=50)
        threading.Thread(target=self._read, daemon=True).start()
        self._ids = itertools.count()
        self._ready = None
        self.timings: list[tuple[str, float]] = []  # (job type, seconds in the worker)

    def _read(self):
        for line in self.process.stdout:
            if line.startswith(MARKER):
                self._answers.put(json.loads(line[len(MARKER):]))
            else:
                self._stdout_tail.append(line)
        self._answers.put({"exited": self.process.wait()})

    def _get(self, timeout: float) -> dict:
        try:
            answer = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise WorkerError(f"{self.name} worker gave no answer within {timeout} s"
                              f"{self.log_tail()}") from None
        if "exited" in answer:
            raise WorkerError(f"{self.name} worker exited with code {answer['exited']}"
                              f"{self.log_tail()}")
        return answer

    def wait_ready(self) -> None:
        if self._ready is None:
            self._ready = self._get(STARTUP_TIMEOUT_S)
            self.timings.append(("start-up", self._ready.get("seconds", float("nan"))))
        if "unavailable" in self._ready:
            raise WorkerError(f"{self.name} is unavailable:\n{self._ready['unavailable']}")

    def send(self, job: dict) -> str:
        job = {**job, "id": f"{self.name}-{job['type']}-{next(self._ids)}"}
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        return job["id"]

    def receive(self, job_id: str) -> dict:
        answer = self._get(JOB_TIMEOUT_S)
        if answer.get("job") != job_id:
            raise WorkerError(f"{self.name} answered {answer} to job {job_id}")
        self.timings.append((job_id.split("-")[-2], answer.get("seconds", float("nan"))))
        if "error" in answer:
            raise WorkerError(f"{self.name} failed job {job_id}:\n{answer['error']}")
        return answer

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        stdout = "".join(self._stdout_tail)
        return (f"\n--- {self.name} stderr ({self.log_path}), last lines ---\n"
                + "\n".join(text) + (f"\n--- stdout ---\n{stdout}" if stdout else ""))

    def quit(self) -> None:
        """Asks the worker to exit (it finishes the job in hand first)."""
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"type": "quit", "id": "quit"}) + "\n")
                self.process.stdin.flush()
            except OSError:
                pass  # already gone; close() reaps it

    def close(self) -> None:
        self.quit()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()  # only this worker, which the pool started
            self.process.wait()
        self._log.close()


class WorkerPool:
    """Every implementation's worker, started together, used for the whole session."""

    def __init__(self, workdir: pathlib.Path, names=tuple(IMPLEMENTATIONS)):
        self.workdir = workdir
        self.workers = {name: Worker(name, workdir) for name in names}

    def run(self, jobs: dict[str, dict]) -> dict[str, dict | WorkerError]:
        """Sends each job to its worker, then collects every answer.

        Returns:
            implementation -> its answer, or the WorkerError explaining why
            there is none (the caller fails the tests that needed it).
        """
        sent, answers = {}, {}
        for name, job in jobs.items():
            worker = self.workers[name]
            try:
                worker.wait_ready()
                sent[name] = worker.send(job)
            except (WorkerError, OSError) as error:
                answers[name] = error if isinstance(error, WorkerError) else WorkerError(
                    f"{name} worker is gone: {error}{worker.log_tail()}")
        for name, job_id in sent.items():
            try:
                answers[name] = self.workers[name].receive(job_id)
            except WorkerError as error:
                answers[name] = error
        return answers

    def timing_report(self) -> str:
        """Seconds each worker spent starting and on each job type."""
        lines = []
        for name, worker in self.workers.items():
            totals: dict[str, float] = collections.defaultdict(float)
            for kind, seconds in worker.timings:
                totals[kind] += seconds
            lines.append(f"{name:>17}: " + ", ".join(f"{k} {v:.1f} s" for k, v in totals.items()))
        return "\n".join(lines)

    def close(self) -> None:
        for worker in self.workers.values():
            worker.quit()
        for worker in self.workers.values():
            worker.close()
