"""Child processes of the main job and the bench, their output teed to a log.

Each framework runs in a child (TensorFlow and torchvision never share a
process, and Keras picks its backend once per process); the parent only
starts them, follows their output and keeps the end of it for the error
message. Children run in the current folder.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from typing import TextIO


@dataclasses.dataclass
class ChildResult:
    """How a child ended: its exit code, the last lines of its output, whether it was killed."""

    returncode: int
    tail: list[str]
    timed_out: bool


def child_env(**overrides: str) -> dict:
    """This process's environment for a child: unbuffered output, TensorFlow's C++ log
    quiet unless the caller set it, then ``overrides``."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"  # so the parent sees each line when it is printed
    return {**env, **overrides}


def run_child(command: list[str], log: TextIO, env: dict | None = None,
              on_line: Callable[[str], None] | None = None, tail_lines: int = 25,
              timeout_s: float | None = None) -> ChildResult:
    """Runs ``command``, writing ``$ command`` and its merged stdout / stderr to ``log``.

    Args:
        command: argv of the child.
        log: an open text file; each line is flushed as it comes (``tail -f`` follows it).
        env: environment of the child (default :func:`child_env`).
        on_line: called with each output line (progress bars, echo).
        tail_lines: how many of the last lines to keep.
        timeout_s: kill the child after this many seconds (None: no limit).

    Returns:
        The :class:`ChildResult`.

    Raises:
        ValueError: naming `timeout_s` or `tail_lines` when not positive.
    """
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"`timeout_s` must be > 0 or None, received {timeout_s!r}")
    if tail_lines < 1:
        raise ValueError(f"`tail_lines` must be >= 1, received {tail_lines!r}")
    tail: deque[str] = deque(maxlen=tail_lines)
    log.write("$ " + " ".join(command) + "\n")
    log.flush()
    killed = threading.Event()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1, env=child_env() if env is None else env) as process:

        def kill():
            killed.set()
            process.kill()

        # Reading stdout blocks until the child ends: a timer enforces the limit.
        watchdog = threading.Timer(timeout_s, kill) if timeout_s is not None else None
        if watchdog is not None:
            watchdog.start()
        try:
            for line in process.stdout:
                log.write(line)
                log.flush()
                tail.append(line.rstrip())
                if on_line is not None:
                    on_line(line)
            code = process.wait()
        finally:
            if watchdog is not None:
                watchdog.cancel()
    return ChildResult(code, list(tail), killed.is_set())
