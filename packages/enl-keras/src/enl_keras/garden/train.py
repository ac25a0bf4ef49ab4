"""Model Garden's vision train entry, with the ENL registrations imported.

Usage (all of ``official/vision/train.py``'s flags work)::

    python -m enl_keras.garden.train --experiment maskrcnn_resnetfpn_enl_coco \\
        --config_file experiments/src/enl_experiments/configs/garden/maskrcnn_r50_enl.yaml \\
        --mode train_and_eval --model_dir /tmp/enl_r50 \\
        --params_override 'runtime.distribution_strategy=mirrored,runtime.num_gpus=8'

This module adds nothing to the training loop: it imports
:mod:`enl_keras.garden.registry_imports` and runs Model Garden's own
``official.vision.train.main`` (orbit checkpoints, TensorBoard summaries,
COCO evaluation, distribution strategies, preemption recovery).

Faults: Model Garden resumes from the newest checkpoint of ``--model_dir``
(the ``checkpoint`` state file). A run killed mid-write leaves that file on
the previous checkpoint, which is where the next run resumes. Before Model
Garden starts, :func:`recover_latest_checkpoint` reads the newest
checkpoint in full; one that cannot be read (a truncated or zero-byte
``.data`` / ``.index`` file) is moved aside as ``<file>.corrupt`` with a
warning naming it, and the run resumes from the newest readable one. When
no checkpoint is readable it raises, naming every file it tried.
"""

from __future__ import annotations

import os
import warnings

from absl import app, flags
from official.common import flags as tfm_flags
from official.vision import train as vision_train

from enl_keras.garden import registry_imports  # noqa: F401  (registers the ENL parts)

CORRUPT_SUFFIX = ".corrupt"


def checkpoint_problem(path: str) -> str | None:
    """Why the checkpoint with prefix ``path`` cannot be restored, or None.

    Reads every tensor: a truncated ``.data`` file passes the ``.index``
    lookup and only fails when the bytes are read.
    """
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError, RuntimeError) as error:
        return f"{type(error).__name__}: {error}".strip()
    return None


def _checkpoint_files(path: str) -> list[str]:
    folder, prefix = os.path.split(path)
    return sorted(os.path.join(folder, name) for name in os.listdir(folder or ".")
                  if name == f"{prefix}.index" or name.startswith(f"{prefix}.data-"))


def recover_latest_checkpoint(model_dir: str) -> str | None:
    """Makes the newest *readable* checkpoint of ``model_dir`` the one to resume.

    Args:
        model_dir: Model Garden's ``--model_dir``.

    Returns:
        The checkpoint prefix Model Garden will restore, or None when
        ``model_dir`` has no checkpoint (a fresh run).

    Raises:
        ValueError: no listed checkpoint can be read; the message names each
            checkpoint's files and why it failed.

    Each unreadable newer checkpoint is renamed to ``<file>.corrupt`` (kept
    for inspection, never deleted) with a ``RuntimeWarning`` naming it, and
    the ``checkpoint`` state file is rewritten to the readable one.
    """
    import tensorflow as tf

    if not model_dir or not tf.io.gfile.isdir(model_dir):
        return None
    state = tf.train.get_checkpoint_state(model_dir)
    if state is None or not state.model_checkpoint_path:
        return None
    paths = [p for p in state.all_model_checkpoint_paths if p != state.model_checkpoint_path]
    paths.append(state.model_checkpoint_path)  # newest last
    failures = []
    for index in range(len(paths) - 1, -1, -1):
        path = paths[index]
        problem = checkpoint_problem(path)
        if problem is None:
            break
        files = _checkpoint_files(path)
        failures.append(f"{', '.join(files) or path + '.*'} ({problem})")
        for name in files:
            os.replace(name, name + CORRUPT_SUFFIX)
        warnings.warn(f"checkpoint {path} cannot be restored ({problem}); moved "
                      f"{', '.join(files) or 'nothing'} aside as *{CORRUPT_SUFFIX} and "
                      f"resuming from the previous checkpoint", RuntimeWarning, stacklevel=2)
    else:
        raise ValueError(f"no checkpoint in `model_dir` {model_dir!r} can be restored: "
                         f"{'; '.join(failures)}; the files were renamed *{CORRUPT_SUFFIX}, "
                         f"so a new run starts from scratch")
    if failures:
        tf.compat.v1.train.update_checkpoint_state(model_dir, path,
                                                   all_model_checkpoint_paths=paths[: index + 1])
    return path


def main(argv) -> None:
    """Model Garden's ``main`` after :func:`recover_latest_checkpoint`."""
    recover_latest_checkpoint(flags.FLAGS.model_dir)
    vision_train.main(argv)


def run(argv=None) -> None:
    """Defines Model Garden's flags and runs :func:`main` (``argv`` as for absl)."""
    tfm_flags.define_flags()
    flags.mark_flags_as_required(["experiment", "mode", "model_dir"])
    app.run(main, argv=argv)


if __name__ == "__main__":
    run()
