"""The file protocol between the parity driver and its per-implementation workers.

Every implementation runs in its own long-lived worker process (importing
torchvision after tensorflow segfaults, and Keras picks its backend once per
process), started once per test session. The driver and the workers exchange
only ``.npz`` files in a temporary directory, and one JSON line per job:

* a **case file** holds a block configuration (``spec``, JSON) and the arrays
  the case needs: the input ``x`` (B, H, W, C) in float32, the cotangent ``r``
  of the scalar loss ``sum(z * r)``, the block weights ``w.<name>`` in the
  shared layout of :mod:`enl_core.params` (float32), and the random directions
  ``v.<name>`` (K, *shape) along which the float64 reference takes central
  differences of the loss;
* a **result file** holds ``z`` (channels-last), ``grad.<name>`` (the full
  gradient of the loss w.r.t. ``x`` and every weight, interchange layout) or
  ``fd.<name>`` (the reference's K directional derivatives), or ``error``
  (a traceback) when the implementation failed on that case;
* a top-down stream case holds, per pyramid level l, the lateral feature
  ``lat.<l>``, the cotangent ``r.<l>`` and the weights ``w.<l>.<name>`` of
  its block; its results ``p.<l>`` and ``grad.lat.<l>`` / ``grad.<l>.<name>``;
* a weight-interchange hop reads an ``.npz`` (or a native file) and writes
  the framework's native file, the ``.npz`` it exports and the outputs.

This module is imported by the driver and by every worker, so it uses NumPy
and enl_core only.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

import numpy as np

from enl_core import params as enl_params

# name -> (worker script, environment). "core" is the float64 reference.
IMPLEMENTATIONS = {
    "core": ("worker_core.py", {}),
    "keras-tensorflow": ("worker_keras.py", {"KERAS_BACKEND": "tensorflow"}),
    "keras-torch": ("worker_keras.py", {"KERAS_BACKEND": "torch"}),
    "keras-jax": ("worker_keras.py", {"KERAS_BACKEND": "jax"}),
    "tf_keras": ("worker_tf_keras.py", {"KERAS_BACKEND": "tensorflow"}),
    "torch": ("worker_torch.py", {}),
}
FRAMEWORKS = tuple(name for name in IMPLEMENTATIONS if name != "core")
# The dtype every framework computes in; tolerances come from enl_core.testing.
DTYPE = "float32"
# Random directions per gradient tensor for the reference's central
# differences. One suffices: all tensors of a case are compared as one array
# (parity_checks.assert_gradients_close), so a direction nearly orthogonal to
# one gradient cannot make the check flaky.
DIRECTIONS = 1
# A line a worker prints to answer a job; anything else on stdout is logged.
MARKER = "@@parity@@ "


def gradient_names(spec: dict) -> list[str]:
    """``x`` and every trainable weight of the case's block."""
    names = ["x", *enl_params.WEIGHT_NAMES]
    if spec.get("dct_weights") == "learnable":
        names.append("dct_weights")
    return names


def case_arrays(spec: dict) -> dict[str, np.ndarray]:
    """The deterministic arrays of a case, drawn from ``spec["seed"]``.

    Everything a framework sees is float32, so the float64 reference runs on
    exactly the same numbers (input rounding is not counted as error).
    """
    rng = np.random.default_rng(spec["seed"])
    shape = (spec["batch"], spec["height"], spec["width"], spec["channels"])
    arrays = {"x": rng.normal(size=shape).astype(np.float32),
              "r": rng.normal(size=shape).astype(np.float32)}
    dct_mode = spec.get("dct_weights", "none")
    block = enl_params.init_params(
        spec["channels"], spec["inter_channels"], seed=int(rng.integers(2**32)),
        dct_size=tuple(spec["dct_size"]), dct_weights=None if dct_mode == "none" else "random")
    for name, value in block.as_dict().items():
        arrays[f"w.{name}"] = value.astype(np.float32)
    for name in gradient_names(spec):
        target = arrays[name if name == "x" else f"w.{name}"]
        arrays[f"v.{name}"] = rng.normal(size=(DIRECTIONS, *target.shape))
    return arrays


def block_weights(arrays: dict, prefix: str = "w.") -> dict[str, np.ndarray]:
    """The ``w.<name>`` arrays of a case (``w.<level>.<name>`` with
    ``prefix="w.<level>."``) under their interchange names."""
    return {key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)}


# The ENL-FPN top-down stream: pyramid levels 2..5 (torchvision's and Model
# Garden's C2..C5), level l of size base * 2**(5 - l), so that every
# upsampling is an exact 2x (Model Garden's nearest_upsampling needs that).
TOP_DOWN_LEVELS = (2, 3, 4, 5)
# The two ENL-FPN decoders: Model Garden's (tf_keras) and torchvision's.
TOP_DOWN_IMPLEMENTATIONS = ("core", "tf_keras", "torch")


def top_down_shapes(spec: dict) -> dict[int, tuple[int, int, int, int]]:
    """(B, H, W, C) of the lateral feature of each level."""
    return {level: (spec["batch"], spec["base_height"] * 2 ** (5 - level),
                    spec["base_width"] * 2 ** (5 - level), spec["channels"])
            for level in TOP_DOWN_LEVELS}


def top_down_gradient_names(spec: dict) -> list[str]:
    """``lat.<level>`` (each lateral feature) and ``<level>.<weight name>``."""
    names = [f"lat.{level}" for level in TOP_DOWN_LEVELS]
    return names + [f"{level}.{name}" for level in spec["block_levels"]
                    for name in enl_params.WEIGHT_NAMES]


def top_down_arrays(spec: dict) -> dict[str, np.ndarray]:
    """Lateral features ``lat.<l>``, cotangents ``r.<l>`` of the loss
    ``sum_l sum(P_l * r_l)``, block weights ``w.<l>.<name>`` and directions."""
    rng = np.random.default_rng(spec["seed"])
    arrays = {}
    for level, shape in top_down_shapes(spec).items():
        arrays[f"lat.{level}"] = rng.normal(size=shape).astype(np.float32)
        arrays[f"r.{level}"] = rng.normal(size=shape).astype(np.float32)
    for level in spec["block_levels"]:
        block = enl_params.init_params(spec["channels"], spec["inter_channels"],
                                       seed=int(rng.integers(2**32)))
        for name, value in block.as_dict().items():
            arrays[f"w.{level}.{name}"] = value.astype(np.float32)
    for name in top_down_gradient_names(spec):
        target = arrays[name if name.startswith("lat.") else f"w.{name}"]
        arrays[f"v.{name}"] = rng.normal(size=(DIRECTIONS, *target.shape))
    return arrays


def write_npz(path, spec: dict | None = None, **arrays) -> None:
    """An ``.npz`` with an optional JSON ``spec`` entry."""
    if spec is not None:
        arrays["spec"] = np.array(json.dumps(spec))
    np.savez(path, **arrays)


def read_npz(path) -> tuple[dict | None, dict[str, np.ndarray]]:
    """(spec or None, the other arrays) of a file written by :func:`write_npz`."""
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    spec = arrays.pop("spec", None)
    return (None if spec is None else json.loads(str(spec))), arrays


def write_error(path, error: str) -> None:
    write_npz(path, error=np.array(error))


def describe(spec: dict) -> str:
    """A one-line description of a case for failure messages."""
    return json.dumps(spec, sort_keys=True)


def serve(name: str, setup, handlers: dict) -> None:
    """The worker main loop: one JSON job per stdin line, one marker line back.

    Args:
        name: the implementation (for messages).
        setup: a callable importing the framework; if it raises, every job is
            answered ``unavailable`` with the reason, so the driver can fail
            that implementation's tests with a clear message.
        handlers: job type -> callable(job) returning a JSON-able dict.
    """
    reply = {"ready": name}
    start = time.perf_counter()
    try:
        setup()
    except Exception:  # noqa: BLE001 - reported to the driver, which fails the tests
        reply["unavailable"] = traceback.format_exc()
    reply["seconds"] = time.perf_counter() - start
    _answer(reply)
    for line in sys.stdin:
        job = json.loads(line)
        if job["type"] == "quit":
            # Every answer is written and flushed; skipping the interpreter's
            # shutdown saves the seconds TensorFlow and torch take to tear down.
            os._exit(0)
        answer = {"job": job["id"]}
        start = time.perf_counter()
        if "unavailable" in reply:
            answer["error"] = f"{name} is unavailable:\n{reply['unavailable']}"
        else:
            try:
                answer.update(handlers[job["type"]](job))
            except Exception:  # noqa: BLE001 - the whole job failed; the driver reports it
                answer["error"] = traceback.format_exc()
        answer["seconds"] = time.perf_counter() - start
        _answer(answer)


def _answer(payload: dict) -> None:
    sys.stdout.write(MARKER + json.dumps(payload) + "\n")
    sys.stdout.flush()
