"""Weight interchange across frameworks and processes (issue 8).

The weights of each block travel around a chain of workers, each in its own
process, every hop through the framework's own weight file:

    .npz (enl_core) -> Keras 3 on TensorFlow (.keras) -> tf_keras (TF checkpoint)
    -> PyTorch (state_dict) -> Keras 3 on torch (.keras) -> .npz (enl_core)

and, besides, Keras 3 on torch reads the very ``.keras`` file Keras 3 on
TensorFlow wrote. At each hop the worker loads what the previous hop exported
(``load_npz``, or the foreign ``.keras``), runs the block, saves its native
file, reloads it into a fresh block, runs that and exports ``save_npz``.

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
# (hop, implementation, source hop, what is read from the source).
HOPS = (
    ("core-in", "core", None, "npz"),
    ("keras-tensorflow", "keras-tensorflow", "core-in", "npz"),
    ("tf_keras", "tf_keras", "keras-tensorflow", "npz"),
    ("keras-torch-reads-keras-file", "keras-torch", "keras-tensorflow", "native"),
    ("torch", "torch", "tf_keras", "npz"),
    ("keras-torch", "keras-torch", "torch", "npz"),
    ("core-out", "core", "keras-torch", "npz"),
)
SOURCE = {hop: source for hop, _, source, _ in HOPS}


class Chain:
    """The files of every hop: ``export(hop, spec)`` (the ``.npz`` it wrote),
    ``outputs(hop, spec)`` (z of the loaded and of the reloaded block)."""

    def __init__(self, directory, answers):
        self.directory, self.answers = directory, answers

    def prefix(self, hop, spec):
        return self.directory / f"{spec}.{hop}"

    def _check(self, hop):
        if hop not in self.answers:
            pytest.fail(f"hop {hop} did not run: an earlier hop failed", pytrace=False)
        if isinstance(self.answers[hop], Exception):
            pytest.fail(f"hop {hop} failed: {self.answers[hop]}", pytrace=False)

    def export(self, hop, spec) -> dict:
        self._check(hop)
        with np.load(f"{self.prefix(hop, spec)}.npz") as data:
            return {key: data[key] for key in data.files}

    def outputs(self, hop, spec) -> dict:
        self._check(hop)
        return protocol.read_npz(f"{self.prefix(hop, spec)}.result.npz")[1]

    def original(self, spec) -> dict:
        with np.load(self.directory / f"{spec}.original.npz") as data:
            return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def chain(parity_pool):
    """Runs the hops round by round; hops whose sources are ready run together."""
    directory = parity_pool.workdir / "interchange"
    directory.mkdir()
    for name, spec in SPECS.items():
        arrays = protocol.case_arrays(spec)
        protocol.write_npz(directory / f"{name}.x.npz", x=arrays["x"])
        enl_params.save_npz(directory / f"{name}.original.npz",
                            enl_params.BlockParams.from_dict(protocol.block_weights(arrays)))
    answers, natives, pending = {}, {}, list(HOPS)
    while pending:
        ready = [hop for hop in pending if hop[2] is None or hop[2] in answers]
        ready = [hop for hop in ready if hop[1] not in {h[1] for h in ready[:ready.index(hop)]}]
        if not ready:
            break  # a source failed; the tests of the hops left say so
        jobs, hop_of = {}, {}
        for hop, implementation, source, kind in ready:
            if source is not None and isinstance(answers[source], Exception):
                answers[hop] = RuntimeError(f"its source hop {source} failed")
                continue
            hops = []
            for index, (name, spec) in enumerate(SPECS.items()):
                if source is None:
                    origin = {"npz": str(directory / f"{name}.original.npz")}
                elif kind == "npz":
                    origin = {"npz": f"{directory / f'{name}.{source}'}.npz"}
                else:
                    origin = {"native": natives[source][index]}
                hops.append({"spec": spec, "x": str(directory / f"{name}.x.npz"),
                             "source": origin, "out": str(directory / f"{name}.{hop}")})
            jobs[implementation], hop_of[implementation] = {"type": "interchange",
                                                            "hops": hops}, hop
        for implementation, answer in parity_pool.run(jobs).items():
            answers[hop_of[implementation]] = answer
            if not isinstance(answer, Exception):
                natives[hop_of[implementation]] = answer["natives"]
        pending = [hop for hop in pending if hop[0] not in answers]
    return Chain(directory, answers)


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


HOP_NAMES = [hop for hop, *_ in HOPS if hop != "core-in"]


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
