"""Faults of ``python -m enl_keras.garden.train``: SIGKILL, corrupt checkpoints.

The train entry runs as a user runs it (its own process, Model Garden's
orbit checkpoints, ``--mode=train``); the test kills it with SIGKILL and
starts it again with the same ``--model_dir``. Model Garden's own restore
must resume from the newest complete checkpoint, so the resumed run's first
step is that checkpoint's step + 1 (the summaries of each process are read
back to check it), and it ends at ``train_steps``. A corrupt newest
checkpoint (a truncated ``.data`` file) is skipped with a warning naming the
file. Tiny Faster R-CNN (ResNet-18, 64 px features), a checkpoint every step.

Default suite: one kill during a checkpoint write and its resume (two
processes). ``slow``: five kill points at seeded random times (startup,
during a step, right after a checkpoint, twice during a checkpoint write),
then a corrupt newest checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.garden

yaml = pytest.importorskip("yaml")

EXPERIMENT = "fasterrcnn_resnetfpn_enl_coco"
TIMEOUT = 900  # seconds for any one process (a loaded 2-core machine)


class Run:
    """One train-entry process writing into ``model_dir``."""

    def __init__(self, workdir, coco, tiny_overrides, train_steps, name):
        self.model_dir = workdir / "model"
        config_file = workdir / "tiny.yaml"
        if not config_file.exists():
            config_file.write_text(yaml.safe_dump(tiny_overrides(EXPERIMENT, coco)))
        trainer = {"trainer": {"train_steps": train_steps, "steps_per_loop": 1,
                               "summary_interval": 1, "checkpoint_interval": 1,
                               "max_to_keep": 20}}
        command = [sys.executable, "-m", "enl_keras.garden.train", f"--experiment={EXPERIMENT}",
                   f"--config_file={config_file}", f"--params_override={json.dumps(trainer)}",
                   "--mode=train", f"--model_dir={self.model_dir}",
                   "--enable_async_checkpointing=false"]
        self.stderr_path = workdir / f"{name}.stderr"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
        with open(self.stderr_path, "w") as stderr:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr,
                                            env=env)
        self.started = time.monotonic()

    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def wait(self) -> str:
        """Waits for a normal exit; returns stderr (asserting return code 0)."""
        returncode = self.process.wait(timeout=TIMEOUT)
        stderr = self.stderr_path.read_text()
        assert returncode == 0, stderr[-6000:]
        return stderr

    def wait_for(self, condition, poll=0.002):
        """Polls ``condition()`` until true; fails if the process exits first."""
        while not condition():
            assert self.running(), self.stderr_path.read_text()[-6000:]
            assert time.monotonic() - self.started < TIMEOUT, "timed out"
            time.sleep(poll)


def latest_step(model_dir) -> int:
    """The step of the checkpoint Model Garden would restore (0: none)."""
    state = model_dir / "checkpoint"
    if not state.exists():
        return 0
    match = re.search(r'^model_checkpoint_path: ".*ckpt-(\d+)"', state.read_text(), re.M)
    return int(match.group(1)) if match else 0


def writing(model_dir) -> bool:
    """A checkpoint is being written: TensorFlow's ``<prefix>_temp`` folder exists."""
    return model_dir.exists() and any(name.endswith("_temp") for name in os.listdir(model_dir))


def steps_per_process(model_dir) -> list[list[int]]:
    """The logged training steps of each process, in start order."""
    import tensorflow as tf

    folder = model_dir / "train"
    if not folder.exists():
        return []
    files = sorted(folder.glob("events.out.tfevents.*"),
                   key=lambda path: float(path.name.split(".")[3]))
    runs = []
    for path in files:
        steps = sorted({event.step for event in tf.compat.v1.train.summary_iterator(str(path))
                        if any(value.tag == "total_loss" for value in event.summary.value)})
        if steps:
            runs.append(steps)
    return runs


def kill_during_checkpoint_write(run) -> int:
    """SIGKILLs ``run`` while a checkpoint is being written; returns the
    newest complete checkpoint's step at that moment."""
    while True:
        run.wait_for(lambda: writing(run.model_dir))
        complete = latest_step(run.model_dir)
        run.kill()
        if writing(run.model_dir):  # the write was cut short, as intended
            return complete
        raise AssertionError("the checkpoint write finished before SIGKILL landed")


def resume_and_check(workdir, coco, tiny_overrides, train_steps, restored, name):
    """Resumes; checks its first step is ``restored + 1`` and it ends at
    ``train_steps``. Returns its stderr."""
    before = len(steps_per_process(workdir / "model"))
    stderr = Run(workdir, coco, tiny_overrides, train_steps, name).wait()
    runs = steps_per_process(workdir / "model")
    assert len(runs) == before + 1, runs
    assert runs[-1][0] == restored + 1, (runs, restored)  # the same next step
    assert runs[-1][-1] == train_steps and latest_step(workdir / "model") == train_steps
    return stderr


def test_killed_during_a_checkpoint_write_resumes_from_the_previous_checkpoint(
        coco_tfrecords, tiny_overrides, tmp_path):
    run = Run(tmp_path, coco_tfrecords, tiny_overrides, 3, "first")
    run.wait_for(lambda: latest_step(run.model_dir) >= 1)
    restored = kill_during_checkpoint_write(run)
    assert restored >= 1
    resume_and_check(tmp_path, coco_tfrecords, tiny_overrides, 3, restored, "resumed")


@pytest.mark.slow
def test_five_kills_then_a_corrupt_newest_checkpoint(coco_tfrecords, tiny_overrides, tmp_path):
    rng = random.Random(14)
    steps = 8
    coco = coco_tfrecords

    def start(name):
        return Run(tmp_path, coco, tiny_overrides, steps, name)

    # 1. During startup (before any step): the resumed run starts at step 1.
    run = start("kill_startup")
    time.sleep(rng.uniform(1.0, 5.0))
    assert latest_step(run.model_dir) == 0
    run.kill()
    # 2. During a training step, at a random time after a checkpoint.
    run = start("kill_step")
    run.wait_for(lambda: latest_step(run.model_dir) >= 1)
    time.sleep(rng.uniform(0.0, 1.0))
    run.kill()
    # 3. Right after a checkpoint completes.
    run = start("kill_after_checkpoint")
    target = latest_step(run.model_dir) + 1
    run.wait_for(lambda: latest_step(run.model_dir) >= target)
    run.kill()
    # 4. and 5. During checkpoint writes.
    for index in (4, 5):
        run = start(f"kill_write_{index}")
        kill_during_checkpoint_write(run)
    restored = latest_step(tmp_path / "model")
    assert restored < steps
    resume_and_check(tmp_path, coco, tiny_overrides, steps, restored, "final")
    runs = steps_per_process(tmp_path / "model")
    assert runs[0][0] == 1  # every kill left a resumable directory

    # A corrupt newest checkpoint: skipped with a warning naming its file.
    data, = (tmp_path / "model").glob(f"ckpt-{steps}.data-*")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    stderr = resume_and_check(tmp_path, coco, tiny_overrides, steps + 1, steps - 1, "corrupt")
    assert f"checkpoint {tmp_path / 'model' / f'ckpt-{steps}'} cannot be restored" in stderr
    assert str(data) in stderr and (data.parent / (data.name + ".corrupt")).exists()
