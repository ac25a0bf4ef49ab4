"""Weight interchange across frameworks and processes (README, "Cross-framework parity").

The weights of each block travel around a chain of workers, each in its own
process, every hop through the framework's own weight file:

    .npz (enl_core) -> Keras 3 on TensorFlow (.keras) -> tf_keras (TF checkpoint)
    -> PyTorch (state_dict) -> Keras 3 on torch (.keras) -> Keras 3 on JAX (.keras)
    -> .npz (enl_core)

and, besides, Keras 3 on torch and on JAX read the very ``.keras`` file Keras 3 on
TensorFlow wrote, and the PyTorch worker converts the tf_keras checkpoint and
that ``.keras`` file to ``.npz`` with ``enl_keras.interchange``
(``tf_checkpoint_to_npz``, ``keras_file_to_npz``: what a PyTorch user runs on
Model Garden / Keras files; a fixed d, configuration rather than a variable,
comes from the model config). At each hop the worker loads what the source hop exported (its
``load_npz``, or the foreign file), runs the block, saves its native file,
reloads it into a fresh block, runs that and exports ``save_npz``.

Checked: every native round trip and the whole chain reproduce the weights
bit for bit; a reloaded block gives bit-identical outputs; a converted block
gives its source's outputs (and the float64 reference's) within the float32
tolerance of ``enl_core.testing``.
"""

from __future__ import annotations

import numpy as np
import parity_protocol as protocol
import pytest

from enl_core import params as enl_params
from enl_core.testing import assert_close

# One spec per kind of weight set: learnable / fixed / no d, both NonLocal modes.
SPECS = {
    "enl-learnable-d": {"block": "enl", "batch": 2, "height": 7, "width": 11, "channels": 12,
                        "inter_channels": 5, "position_encoding": True, "dct_size": [9, 9],
                        "dct_weights": "learnable", "seed": 1},
    "enl-fixed-d": {"block": "enl", "batch": 1, "height": 13, "width": 6, "channels": 16,
                    "inter_channels": 8, "position_encoding": True, "dct_size": [4, 3],
                    "dct_weights": "fixed", "seed": 2},
    "enl-no-position": {"block": "enl", "batch": 1, "height": 5, "width": 9, "channels": 8,
                        "inter_channels": 3, "position_encoding": False, "dct_size": [9, 9],
                        "dct_weights": "none", "seed": 3},
    "nl-embedded-gaussian": {"block": "nl", "batch": 2, "height": 10, "width": 9,
                             "channels": 10, "inter_channels": 4, "mode": "embedded_gaussian",
                             "scale": True, "sub_sample": True, "position_encoding": False,
                             "dct_size": [9, 9], "seed": 4},
    "nl-dot-product-position": {"block": "nl", "batch": 1, "height": 6, "width": 8,
                                "channels": 6, "inter_channels": 6, "mode": "dot_product",
                                "scale": True, "sub_sample": False, "position_encoding": True,
                                "dct_size": [5, 5], "seed": 5},
}
# Rounds of hops: (hop, implementation, source hop, what is read from the
# source: its exported "npz", its "native" file, or its native file through
# an enl_keras.interchange reader). A round's hops run side by side.
ROUNDS = (
    (("core-in", "core", None, "npz"),),
    (("keras-tensorflow", "keras-tensorflow", "core-in", "npz"),),
    (("tf_keras", "tf_keras", "keras-tensorflow", "npz"),
     ("keras-torch-reads-keras-file", "keras-torch", "keras-tensorflow", "native"),
     ("keras-jax-reads-keras-file", "keras-jax", "keras-tensorflow", "native")),
    (("torch", "torch", "tf_keras", "npz"),),
    (("keras-torch", "keras-torch", "torch", "npz"),
     # A torch user converting Model Garden / Keras files (torch imported first).
     ("torch-converts-tf-checkpoint", "torch", "tf_keras", "tf_checkpoint"),
     ("torch-converts-keras-file", "torch", "keras-tensorflow", "keras_file")),
    (("keras-jax", "keras-jax", "keras-torch", "npz"),),
    (("core-out", "core", "keras-jax", "npz"),),
)
SOURCE = {hop: source for hops in ROUNDS for hop, _, source, _ in hops}


class Chain:
    """The files of every hop: ``export(hop, spec)`` (the ``.npz`` it wrote),
    ``outputs(hop, spec)`` (z of the loaded and of the reloaded block)."""

    def __init__(self, directory, failures):
        self.directory, self.failures = directory, failures

    def _check(self, hop):
        if hop in self.failures:
            pytest.fail(f"hop {hop} failed: {self.failures[hop]}", pytrace=False)

    def export(self, hop, spec) -> dict:
        self._check(hop)
        with np.load(self.directory / f"{spec}.{hop}.npz") as data:
            return {key: data[key] for key in data.files}

    def outputs(self, hop, spec) -> dict:
        self._check(hop)
        return protocol.read_npz(self.directory / f"{spec}.{hop}.result.npz")[1]

    def original(self, spec) -> dict:
        with np.load(self.directory / f"{spec}.original.npz") as data:
            return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def chain(parity_pool):
    """Runs the rounds; an implementation's hops of a round form one job."""
    directory = parity_pool.workdir / "interchange"
    directory.mkdir()
    for name, spec in SPECS.items():
        arrays = protocol.case_arrays(spec)
        protocol.write_npz(directory / f"{name}.x.npz", x=arrays["x"])
        enl_params.save_npz(directory / f"{name}.original.npz",
                            enl_params.BlockParams.from_dict(protocol.block_weights(arrays)))
    natives, failures = {}, {}
    for hops in ROUNDS:
        jobs, entries = {}, {}
        for hop, implementation, source, kind in hops:
            if source in failures:
                failures[hop] = f"its source hop {source} failed"
                continue
            job = jobs.setdefault(implementation, {"type": "interchange", "hops": []})
            for name, spec in SPECS.items():
                if source is None:
                    origin = {"npz": str(directory / f"{name}.original.npz")}
                elif kind == "npz":
                    origin = {"npz": str(directory / f"{name}.{source}.npz")}
                else:
                    origin = {kind: natives[source, name]}
                # "config": what a user has besides the weight file (the model
                # config), e.g. a fixed d, which a TF checkpoint does not hold.
                job["hops"].append({"spec": spec, "x": str(directory / f"{name}.x.npz"),
                                    "source": origin, "out": str(directory / f"{name}.{hop}"),
                                    "config": str(directory / f"{name}.original.npz")})
                entries.setdefault(implementation, []).append((hop, name))
        for implementation, answer in parity_pool.run(jobs).items():
            if isinstance(answer, Exception):
                failures.update({hop: answer for hop, _ in entries[implementation]})
            else:
                natives.update(zip(entries[implementation], answer["natives"], strict=True))
    return Chain(directory, failures)


def assert_same_weights(actual: dict, expected: dict, context: str) -> None:
    """The same names and bit-identical values (a float32 value stored as
    float64 is the same value)."""
    assert sorted(actual) == sorted(expected), f"{context}: names {sorted(actual)} != " \
                                               f"{sorted(expected)}"
    for name in expected:
        assert actual[name].shape == expected[name].shape, f"{context}: {name} shape"
        different = np.flatnonzero(actual[name].ravel() != expected[name].ravel())
        assert different.size == 0, (
            f"{context}: {name} differs at {different.size} of {expected[name].size} entries, "
            f"e.g. flat index {different[0]}: {actual[name].ravel()[different[0]]!r} != "
            f"{expected[name].ravel()[different[0]]!r}")


HOP_NAMES = [hop for hop in SOURCE if hop != "core-in"]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("hop", HOP_NAMES)
def test_native_round_trip_is_exact(chain, hop, spec):
    """Weights out == weights in, and the reloaded block's z == the loaded one's."""
    source = SOURCE[hop]
    assert_same_weights(chain.export(hop, spec), chain.export(source, spec),
                        f"{hop} export vs its source {source}, {spec}")
    outputs = chain.outputs(hop, spec)
    np.testing.assert_array_equal(outputs["z_native"], outputs["z"],
                                  err_msg=f"{hop}: block reloaded from its native file")


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("hop", HOP_NAMES)
def test_converted_block_gives_its_source_outputs(chain, hop, spec):
    """Across frameworks (float32) and against the float64 reference."""
    z = chain.outputs(hop, spec)["z"]
    source = SOURCE[hop]
    context = f"{hop} (converted from {source}), {spec}: {protocol.describe(SPECS[spec])}"
    assert_close(z, chain.outputs(source, spec)["z"], protocol.DTYPE,
                 err_msg=f"z vs its source, {context}")
    assert_close(z, chain.outputs("core-in", spec)["z"], protocol.DTYPE,
                 err_msg=f"z vs float64 reference, {context}")


@pytest.mark.parametrize("spec", SPECS)
def test_chain_returns_the_original_weights(chain, spec):
    """.npz -> .keras -> TF checkpoint -> state_dict -> .keras -> .npz is the identity."""
    assert_same_weights(chain.export("core-out", spec), chain.original(spec),
                        f"end of the chain vs the original weights, {spec}")
