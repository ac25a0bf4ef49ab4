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

Files are written to a temporary name and renamed, so a run killed while
saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
import re
from typing import Any

import numpy as np
import torch

CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)\.pt$")


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


def latest_checkpoint(directory: str) -> str | None:
    """The checkpoint with the highest step in ``directory``, or None."""
    if not os.path.isdir(directory):
        return None
    found = [(int(m.group(1)), name) for name in os.listdir(directory)
             if (m := CHECKPOINT_PATTERN.match(name))]
    return os.path.join(directory, max(found)[1]) if found else None


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
    torch.save(payload, temporary)
    os.replace(temporary, path)


def load_checkpoint(path: str) -> dict[str, Any]:
    """Reads a checkpoint (``weights_only``: no code is unpickled).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a training checkpoint.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`resume` checkpoint not found: {path!r}")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    required = ("model", "optimizer", "lr_scheduler", "step", "rng", "config")
    if not isinstance(payload, dict) or any(key not in payload for key in required):
        raise ValueError(f"`resume` must be a checkpoint of enl_torch.train with keys "
                         f"{required}, received {path!r}")
    return payload
