"""Parity worker: the float64 NumPy reference, ``enl_core``.

Outputs come from ``enl_core.enl_block`` / ``enl_core.nonlocal_block`` in
float64 on the case's float32 numbers. Gradients of the loss ``sum(z * r)``
are NOT taken from any framework's autodiff (that would not be independent):
this worker takes central differences of the float64 reference along the
case's random directions ``v.<name>``, one per tensor (x and every weight).
The driver compares them with ``<grad, v>`` of each framework's full
gradient, and the full gradients of the frameworks with each other.

Native weight file: the neutral ``.npz`` itself (``enl_core.save_npz``).
"""

from __future__ import annotations

import traceback

import numpy as np
import parity_protocol as protocol

from enl_core import blocks
from enl_core import params as enl_params

# Step of the central differences. The loss is a polynomial of degree <= 3 in
# x and <= 2 in each weight for the dot-product blocks, so the 4-point stencil
# (error O(h^4)) is exact up to rounding and a wide step keeps rounding small.
# Max pooling (sub_sample) has kinks, some within 1e-6 of a drawn point (seen):
# a tiny step keeps every window's argmax; the loss is smooth elsewhere.
STEP = 1e-3
STEP_SUB_SAMPLE = 1e-7


def reference(spec: dict, weights: dict, x: np.ndarray) -> np.ndarray:
    """z of the case's block in float64 (the ``expected_fn``)."""
    params = enl_params.BlockParams.from_dict(
        {name: np.asarray(value, np.float64) for name, value in weights.items()})
    x = np.asarray(x, np.float64)
    if spec["block"] == "enl":
        return blocks.enl_block(x, params, spec["position_encoding"], tuple(spec["dct_size"]))
    return blocks.nonlocal_block(x, params, spec["mode"], spec["scale"], spec["sub_sample"],
                                 spec["position_encoding"], tuple(spec["dct_size"]))


def directional_derivatives(spec: dict, arrays: dict) -> dict[str, np.ndarray]:
    """``d/dh sum(z(t + h v) * r)`` at h = 0 for each tensor t and direction v."""
    weights = {name: arrays[name].astype(np.float64) for name in arrays
               if name.startswith("w.")}
    x, r = arrays["x"].astype(np.float64), arrays["r"].astype(np.float64)
    step = STEP_SUB_SAMPLE if spec["block"] == "nl" and spec["sub_sample"] else STEP

    def loss(name, offset):
        tensors = {"x": x, **weights}
        key = name if name == "x" else f"w.{name}"
        tensors[key] = tensors[key] + offset
        z = reference(spec, protocol.block_weights(tensors), tensors["x"])
        return float(np.sum(z * r))

    derivatives = {}
    for name in protocol.gradient_names(spec):
        values = []
        for direction in arrays[f"v.{name}"]:
            h = step * direction
            values.append((-loss(name, 2 * h) + 8 * loss(name, h) - 8 * loss(name, -h)
                           + loss(name, -2 * h)) / (12 * step))
        derivatives[name] = np.array(values)
    return derivatives


def blocks_job(job: dict) -> dict:
    failed = 0
    for case_path, result_path in job["cases"]:
        try:
            spec, arrays = protocol.read_npz(case_path)
            z = reference(spec, protocol.block_weights(arrays), arrays["x"])
            fd = directional_derivatives(spec, arrays)
            protocol.write_npz(result_path, z=z, **{f"fd.{k}": v for k, v in fd.items()})
        except Exception:  # noqa: BLE001 - reported per case by the driver
            failed += 1
            protocol.write_error(result_path, traceback.format_exc())
    return {"failed": failed}


def interchange_job(job: dict) -> dict:
    """The reference's hop: the ``.npz`` is its native file."""
    natives = []
    for hop in job["hops"]:
        spec, x = hop["spec"], protocol.read_npz(hop["x"])[1]["x"]
        params = enl_params.load_npz(hop["source"]["npz"])
        z = reference(spec, params.as_dict(), x)
        native = hop["out"] + ".native.npz"
        enl_params.save_npz(native, params)
        reloaded = enl_params.load_npz(native)
        enl_params.save_npz(hop["out"] + ".npz", reloaded)
        protocol.write_npz(hop["out"] + ".result.npz", z=z,
                           z_native=reference(spec, reloaded.as_dict(), x))
        natives.append(native)
    return {"natives": natives}


if __name__ == "__main__":
    protocol.serve("core", lambda: None, {"blocks": blocks_job, "interchange": interchange_job})
