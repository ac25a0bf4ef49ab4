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

# Steps of the central differences. The 4-point stencil (error O(h^4)) is
# exact up to rounding for polynomials of degree <= 4, such as the
# dot-product blocks in x (degree 3); in each single weight tensor those blocks
# are linear (d: quadratic), so there the 2-point stencil is exact and half the
# cost. A wide step keeps rounding small.
STEP_POLYNOMIAL = 1e-3
# The softmax and deep top-down compositions are smooth but not low-degree:
# at 1e-3 the stencil was off by 5e-4 relative on a 4-level NL stream (seen).
STEP_SMOOTH = 1e-5
# Max pooling (sub_sample) has kinks, some within 1e-6 of a drawn point (seen):
# a tiny step keeps every window's argmax; the loss is smooth elsewhere.
STEP_KINKS = 1e-7


def reference(spec: dict, weights: dict, x: np.ndarray) -> np.ndarray:
    """z of the case's block in float64 (the ``expected_fn``)."""
    params = enl_params.BlockParams.from_dict(
        {name: np.asarray(value, np.float64) for name, value in weights.items()})
    x = np.asarray(x, np.float64)
    if spec["block"] == "enl":
        return blocks.enl_block(x, params, spec["position_encoding"], tuple(spec["dct_size"]))
    return blocks.nonlocal_block(x, params, spec["mode"], spec["scale"], spec["sub_sample"],
                                 spec["position_encoding"], tuple(spec["dct_size"]))


def central_differences(loss, tensors: dict, directions: dict, step: float,
                        two_point=frozenset()) -> dict:
    """``d/dh loss(tensors with t + h v)`` at h = 0, for each tensor name t in
    ``directions`` and each of its directions v: the 4-point stencil, or the
    2-point one for the names in ``two_point`` (where loss is quadratic)."""
    def shifted(name, offset):
        return loss({**tensors, name: tensors[name] + offset})

    def derivative(name, v):
        if name in two_point:
            return (shifted(name, step * v) - shifted(name, -step * v)) / (2 * step)
        return (-shifted(name, 2 * step * v) + 8 * shifted(name, step * v)
                - 8 * shifted(name, -step * v) + shifted(name, -2 * step * v)) / (12 * step)

    return {name: np.array([derivative(name, v) for v in name_directions])
            for name, name_directions in directions.items()}


def directional_derivatives(spec: dict, arrays: dict) -> dict[str, np.ndarray]:
    """Central differences of ``sum(z * r)`` w.r.t. x and every weight."""
    r = arrays["r"].astype(np.float64)
    tensors = {"x": arrays["x"].astype(np.float64)}
    tensors.update({name: value.astype(np.float64)
                    for name, value in protocol.block_weights(arrays).items()})

    def loss(values):
        weights = {name: value for name, value in values.items() if name != "x"}
        return float(np.sum(reference(spec, weights, values["x"]) * r))

    names = protocol.gradient_names(spec)
    if spec["block"] == "nl" and spec["sub_sample"]:
        step, two_point = STEP_KINKS, frozenset()
    elif spec["block"] == "nl" and spec["mode"] == "embedded_gaussian":
        step, two_point = STEP_SMOOTH, frozenset()
    else:
        step, two_point = STEP_POLYNOMIAL, frozenset(names) - {"x"}
    return central_differences(loss, tensors, {name: arrays[f"v.{name}"] for name in names},
                               step, two_point)


def upsample(feature: np.ndarray) -> np.ndarray:
    """Nearest-neighbour 2x upsampling of (B, H, W, C)."""
    return feature.repeat(2, axis=1).repeat(2, axis=2)


def reference_top_down(spec: dict, laterals: dict, weights: dict) -> dict:
    """The ENL-FPN top-down stream, written plainly (docs/ENL-SPEC.md "Coarse-to-fine
    placement"): ``P5 = block_5(lat5)``, ``P_l = block_l(lat_l + up(P_{l+1}))``;
    a level without a block passes its merged feature on unchanged.

    ``weights[level]`` holds the block's weights; "enl" blocks are ENL with the
    spec's position term, "nl" blocks the embedded-Gaussian NL (scaled), as
    both decoders build them.
    """
    outputs, coarser = {}, None
    for level in sorted(protocol.TOP_DOWN_LEVELS, reverse=True):
        merged = laterals[level] if coarser is None else laterals[level] + upsample(coarser)
        if level in spec["block_levels"]:
            block = {"block": spec["block"], "position_encoding": spec["position_encoding"],
                     "dct_size": spec["dct_size"], "mode": "embedded_gaussian", "scale": True,
                     "sub_sample": False}
            if spec["block"] == "nl":
                block["position_encoding"] = False
            merged = reference(block, weights[level], merged)
        outputs[level] = coarser = merged
    return outputs


def top_down_job(job: dict) -> dict:
    failed = 0
    for case_path, result_path in job["cases"]:
        try:
            spec, arrays = protocol.read_npz(case_path)
            tensors = {name: value.astype(np.float64) for name, value in arrays.items()
                       if name.startswith(("lat.", "w."))}

            def stream(values, spec=spec):
                laterals = {level: values[f"lat.{level}"] for level in protocol.TOP_DOWN_LEVELS}
                weights = {level: protocol.block_weights(values, f"w.{level}.")
                           for level in spec["block_levels"]}
                return reference_top_down(spec, laterals, weights)

            def loss(values, arrays=arrays, stream=stream):
                return float(sum(np.sum(p * arrays[f"r.{level}"].astype(np.float64))
                                 for level, p in stream(values).items()))

            names = protocol.top_down_gradient_names(spec)
            fd = central_differences(
                loss, tensors,
                {(name if name.startswith("lat.") else f"w.{name}"): arrays[f"v.{name}"]
                 for name in names}, STEP_SMOOTH)
            outputs = stream(tensors)
            protocol.write_npz(result_path, **{f"p.{level}": p for level, p in outputs.items()},
                               **{f"fd.{name}": fd[name if name.startswith("lat.") else
                                                   f"w.{name}"] for name in names})
        except Exception:  # noqa: BLE001 - reported per case by the driver
            failed += 1
            protocol.write_error(result_path, traceback.format_exc())
    return {"failed": failed}


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
    protocol.serve("core", lambda: None, {"blocks": blocks_job, "interchange": interchange_job,
                                          "top_down": top_down_job})
