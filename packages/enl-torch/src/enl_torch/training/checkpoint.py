"""Checkpoints that resume exactly: model, optimizer, LR schedule, RNG, step.

A checkpoint is one ``torch.save`` file holding plain containers and tensors
only, so it loads with ``weights_only=True`` (no pickled code):

=================  ==================================================
key                value
=================  ==================================================
``model``          the unwrapped model's ``state_dict``
``optimizer``      ``optimizer.state_dict()``
``lr_scheduler``   ``scheduler.state_dict()``
``step``           optimizer steps completed
``rng``            one entry per rank: python, numpy, torch (and CUDA) states
``config``         the training arguments (plain values)
=================  ==================================================

Files are written to a temporary name, flushed to disk and renamed
(``os.replace``), so a run killed while saving leaves the previous checkpoints
intact and never a partial ``step_*.pt``. A file that cannot be read anyway
(truncated or emptied by a full disk or a copy, say) is reported by name:
:func:`load_checkpoint` raises :class:`CorruptCheckpointError`, and
:func:`load_latest_checkpoint` (``--resume latest``) warns about each such
file and falls back to the newest readable one.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import warnings
import zipfile
from typing import Any

import numpy as np
import torch

CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)\.pt$")
REQUIRED_KEYS = ("model", "optimizer", "lr_scheduler", "step", "rng", "config")


class CorruptCheckpointError(ValueError):
    """A checkpoint file exists but cannot be read (truncated, empty, not ours)."""


def rng_state() -> dict[str, Any]:
    """This process's generator states, as plain Python values.

    Plain lists (not tensors) so that ``all_gather_object`` can move them
    between ranks and ``torch.load(weights_only=True)`` can read them.
    """
    # The legacy global generator is what third-party code draws from; save it too.
    numpy_state = np.random.get_state()  # noqa: NPY002
    state = {
        "python": random.getstate(),
        "numpy": {"name": numpy_state[0], "key": numpy_state[1].tolist(),
                  "pos": int(numpy_state[2]), "has_gauss": int(numpy_state[3]),
                  "cached_gaussian": float(numpy_state[4])},
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what :func:`rng_state` returned."""
    python_state = state["python"]
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], np.asarray(numpy_state["key"], np.uint32),  # noqa: NPY002
                         numpy_state["pos"], numpy_state["has_gauss"],
                         numpy_state["cached_gaussian"]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def checkpoint_path(directory: str, step: int) -> str:
    """``directory/step_NNNNNNN.pt``."""
    return os.path.join(directory, f"step_{step:07d}.pt")


def checkpoint_files(directory: str) -> list[str]:
    """The ``step_*.pt`` files of ``directory``, highest step first."""
    if not os.path.isdir(directory):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(directory)
             if (m := CHECKPOINT_PATTERN.match(name))]
    return [os.path.join(directory, name) for _, name in sorted(found, reverse=True)]


def load_latest_checkpoint(directory: str) -> tuple[str, dict[str, Any]] | None:
    """``(path, checkpoint)`` of the newest readable checkpoint in ``directory``.

    Each newer file that cannot be read is skipped with a ``RuntimeWarning``
    naming it and the reason.

    Returns:
        None when ``directory`` holds no readable checkpoint.
    """
    for path in checkpoint_files(directory):
        try:
            return path, load_checkpoint(path)
        except CorruptCheckpointError as error:
            warnings.warn(f"skipping unreadable checkpoint {path!r}: {error}", RuntimeWarning,
                          stacklevel=2)
    return None


def latest_checkpoint(directory: str) -> str | None:
    """The path of the newest readable checkpoint in ``directory`` (see
    :func:`load_latest_checkpoint`), or None."""
    found = load_latest_checkpoint(directory)
    return None if found is None else found[0]


def save_checkpoint(path: str, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, step: int,
                    rng: list[dict[str, Any]], config: dict[str, Any]) -> None:
    """Writes the checkpoint atomically (see the module docstring)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "step": int(step),
        "rng": rng,
        "config": config,
    }
    temporary = f"{path}.tmp"
    with open(temporary, "wb") as stream:
        torch.save(payload, stream)
        stream.flush()
        os.fsync(stream.fileno())  # the bytes are on disk before the name is
    os.replace(temporary, path)


def load_checkpoint(path: str) -> dict[str, Any]:
    """Reads a checkpoint (``weights_only``: no code is unpickled).

    Raises:
        FileNotFoundError: no file at ``path``.
        CorruptCheckpointError: (a ``ValueError``) the file is empty, truncated
            or not a training checkpoint; the message names it.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`resume` checkpoint not found: {path!r}")
    size = os.path.getsize(path)
    if size == 0:
        raise CorruptCheckpointError(f"checkpoint {path!r} is empty (0 bytes)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise  # unreadable, not damaged: the OS error names the file
    # torch.load's errors for a damaged file: a broken zip (RuntimeError from the
    # stream reader), a cut pickle (EOFError, UnpicklingError), a bad header, and
    # a bare OSError (Errno 22) where a cut falls inside the zip's first records.
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, pickle.UnpicklingError,
            ValueError) as error:
        raise CorruptCheckpointError(f"checkpoint {path!r} ({size} bytes) cannot be read, "
                                     f"it is truncated or corrupt: "
                                     f"{type(error).__name__}: {error}") from error
    if not isinstance(payload, dict) or any(key not in payload for key in REQUIRED_KEYS):
        raise CorruptCheckpointError(f"`resume` must be a checkpoint of enl_torch.train with "
                                     f"keys {REQUIRED_KEYS}, received {path!r}")
    return payload
