"""Runs ``enl_torch.train`` and SIGKILLs itself at one chosen point (a test helper).

Usage::

    python train_fault_worker.py KIND:N[:FRACTION] -- <enl_torch.train arguments>

``KIND`` is where this process dies, at the ``N``-th time (1-based, counted in
this process) it gets there:

=============  =================================================================
``none``       nowhere: the run completes
``step``       as optimizer step N begins (before its batch is loaded onto the model)
``update``     inside ``SGD.step`` of step N: gradients computed, weights not updated
``save``       while writing checkpoint N: ``FRACTION`` of its bytes are on disk in
               the temporary file, then the process is killed (a real partial file)
``saved``      just after checkpoint N is in place, before the log line and the
               next step
=============  =================================================================

The kill is ``os.kill(getpid(), SIGKILL)``: no handler, no cleanup, no flush,
exactly what ``kill -9`` from outside does, but at a point chosen in advance,
so that the test is deterministic. Nothing here is part of the product: the
hooks wrap ``torch.save``, ``SGD.step`` and the train module's functions in
this process only.
"""

from __future__ import annotations

import io
import os
import signal
import sys


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    spec, separator, *train_argv = argv
    assert separator == "--", argv
    kind, _, rest = spec.partition(":")
    number, _, fraction = rest.partition(":")
    target = int(number) if number else 0
    counts = {"step": 0, "update": 0, "save": 0, "saved": 0}

    import torch

    from enl_torch import train
    from enl_torch.training import checkpoint

    def arrived(name: str) -> bool:
        counts[name] += 1
        return kind == name and counts[name] == target

    train_step, sgd_step, torch_save = train.train_step, torch.optim.SGD.step, torch.save
    save_checkpoint = checkpoint.save_checkpoint

    def killing_train_step(*args, **kwargs):
        if arrived("step"):
            _die()
        return train_step(*args, **kwargs)

    def killing_sgd_step(self, *args, **kwargs):
        if arrived("update"):
            _die()
        return sgd_step(self, *args, **kwargs)

    def killing_torch_save(obj, f, *args, **kwargs):
        if arrived("save"):
            buffer = io.BytesIO()
            torch_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            f.write(data[:int(len(data) * float(fraction))])
            f.flush()
            os.fsync(f.fileno())
            _die()
        return torch_save(obj, f, *args, **kwargs)

    def killing_save_checkpoint(*args, **kwargs):
        save_checkpoint(*args, **kwargs)
        if arrived("saved"):
            _die()

    train.train_step = killing_train_step
    torch.optim.SGD.step = killing_sgd_step
    torch.save = killing_torch_save
    checkpoint.save_checkpoint = killing_save_checkpoint
    return train.main(train_argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
