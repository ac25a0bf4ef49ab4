"""What every framework worker does, whatever the framework.

A worker script subclasses :class:`Adapter` with the few framework-specific
steps (build a block, run it with gradients, save and load the native weight
file) and calls :func:`run`. The jobs themselves (a batch of block cases, a
hop of the weight-interchange chain, a top-down stream) are written once here,
so every framework is exercised in exactly the same way.
"""

from __future__ import annotations

import traceback

import numpy as np
import parity_protocol as protocol

from enl_core import params as enl_params


def block_arguments(spec: dict, weights: dict | None) -> tuple[str, dict]:
    """("ENL" | "NonLocal", constructor keyword arguments) of a case.

    Channels-last keyword names shared by enl_keras and enl_torch (enl_torch
    takes ``in_channels`` first in addition). A fixed d is configuration, so it
    is taken from the weights the block will receive.
    """
    common = {"inter_channels": spec["inter_channels"], "dct_size": tuple(spec["dct_size"]),
              "position_encoding": spec["position_encoding"]}
    if spec["block"] == "enl":
        dct_mode = spec.get("dct_weights", "none")
        dct = {"none": None, "learnable": "learnable"}.get(dct_mode)
        if dct_mode == "fixed":
            dct = np.asarray(weights["dct_weights"], dtype=np.float64)
        return "ENL", {**common, "dct_weights": dct}
    return "NonLocal", {**common, "mode": spec["mode"], "scale": spec["scale"],
                        "sub_sample": spec["sub_sample"]}


class Adapter:
    """The framework-specific steps; arrays in and out are NumPy, channels-last."""

    name = "?"

    def setup(self) -> None:
        """Imports the framework (errors make the implementation "unavailable")."""
        raise NotImplementedError

    def build(self, spec: dict, weights: dict):
        """A block for ``spec`` holding ``weights`` (interchange names)."""
        raise NotImplementedError

    def forward(self, block, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward_and_gradients(self, block, x, r) -> tuple[np.ndarray, dict]:
        """``z`` and the gradients of ``sum(z * r)``: ``"x"`` and every weight
        under its interchange name (the framework's own exporter maps them)."""
        raise NotImplementedError

    def save_native(self, block, spec: dict, x: np.ndarray, prefix: str) -> str:
        """Writes the framework's own weight file; returns its path."""
        raise NotImplementedError

    def load_native(self, spec: dict, path: str, x: np.ndarray, template: dict):
        """A fresh block read from :meth:`save_native`'s file. ``template``:
        weights of the saved block, for constructor arguments only."""
        raise NotImplementedError

    def top_down_forward_and_gradients(self, spec: dict, weights: dict, laterals: dict,
                                       cotangents: dict) -> tuple[dict, dict]:
        """The framework's ENL-FPN decoder with identity lateral and output
        convolutions (and an identity output norm), so that its outputs are
        the top-down stream itself, fed with ``laterals`` (level -> NHWC).
        ``weights``: level -> block weights. Returns (level -> P_l, gradients
        of ``sum_l sum(P_l * r_l)`` named as in
        :func:`parity_protocol.top_down_gradient_names`)."""
        raise NotImplementedError(f"{self.name} has no ENL-FPN top-down stream")

    def load_foreign(self, spec: dict, source: dict, x: np.ndarray, directory: str,
                     config: dict):
        """A block read from another implementation's native file: directly
        (``{"native": path}``, e.g. a ``.keras`` file across Keras backends) or
        through a converter (``{"tf_checkpoint": path}``, ``{"keras_file": path}``);
        ``directory`` is for intermediate files; ``config``: weights standing
        for the model configuration a user has (for a fixed d only)."""
        raise NotImplementedError(f"{self.name} reads no foreign file: {source}")


def blocks_job(adapter: Adapter, job: dict) -> dict:
    """Runs a batch of block cases; one result file per case, errors included."""
    failed = 0
    for case_path, result_path in job["cases"]:
        try:
            spec, arrays = protocol.read_npz(case_path)
            weights = protocol.block_weights(arrays)
            block = adapter.build(spec, weights)
            z, grads = adapter.forward_and_gradients(block, arrays["x"], arrays["r"])
            wanted = protocol.gradient_names(spec)
            missing = [name for name in wanted if name not in grads]
            if missing:
                raise KeyError(f"{adapter.name} returned no gradient for {missing}; "
                               f"returned {sorted(grads)}")
            protocol.write_npz(result_path, z=z,
                               **{f"grad.{name}": grads[name] for name in wanted})
        except Exception:  # noqa: BLE001 - one failing case must not hide the others
            failed += 1
            protocol.write_error(result_path, traceback.format_exc())
    return {"failed": failed}


def interchange_job(adapter: Adapter, job: dict) -> dict:
    """One hop of the weight-interchange chain, for each block spec of the job.

    Loads the weights (the neutral ``.npz`` through the block's ``load_npz``,
    or another implementation's native file), runs the block, round-trips it
    through this framework's native file in a fresh block, runs that, and
    exports it with ``save_npz`` for the next hop.
    """
    natives = []
    for hop in job["hops"]:
        spec, x = hop["spec"], protocol.read_npz(hop["x"])[1]["x"]
        source = hop["source"]
        if "npz" in source:
            weights = enl_params.load_npz(source["npz"]).as_dict()
            block = adapter.build(spec, weights)
            block.load_npz(source["npz"])
        else:
            block = adapter.load_foreign(spec, source, x, hop["out"] + ".converted",
                                         enl_params.load_npz(hop["config"]).as_dict())
        z_source = adapter.forward(block, x)
        native = adapter.save_native(block, spec, x, hop["out"])
        reloaded = adapter.load_native(spec, native, x, block.get_block_weights())
        z_native = adapter.forward(reloaded, x)
        reloaded.save_npz(hop["out"] + ".npz")
        protocol.write_npz(hop["out"] + ".result.npz", z=z_source, z_native=z_native)
        natives.append(native)
    return {"natives": natives}


def top_down_job(adapter: Adapter, job: dict) -> dict:
    """Runs a batch of top-down stream cases; one result file per case."""
    failed = 0
    for case_path, result_path in job["cases"]:
        try:
            spec, arrays = protocol.read_npz(case_path)
            levels = protocol.TOP_DOWN_LEVELS
            outputs, grads = adapter.top_down_forward_and_gradients(
                spec, {level: protocol.block_weights(arrays, f"w.{level}.")
                       for level in spec["block_levels"]},
                {level: arrays[f"lat.{level}"] for level in levels},
                {level: arrays[f"r.{level}"] for level in levels})
            wanted = protocol.top_down_gradient_names(spec)
            missing = [name for name in wanted if name not in grads]
            if missing:
                raise KeyError(f"{adapter.name} returned no gradient for {missing}")
            protocol.write_npz(result_path,
                               **{f"p.{level}": outputs[level] for level in levels},
                               **{f"grad.{name}": grads[name] for name in wanted})
        except Exception:  # noqa: BLE001 - one failing case must not hide the others
            failed += 1
            protocol.write_error(result_path, traceback.format_exc())
    return {"failed": failed}


def run(adapter: Adapter) -> None:
    protocol.serve(adapter.name, adapter.setup, {
        "blocks": lambda job: blocks_job(adapter, job),
        "interchange": lambda job: interchange_job(adapter, job),
        "top_down": lambda job: top_down_job(adapter, job),
    })
