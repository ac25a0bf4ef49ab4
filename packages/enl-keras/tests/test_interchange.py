"""enl_keras.interchange: Keras models and .keras files <-> the shared .npz, exact.

Runs on every Keras backend. The TF-checkpoint reader and the torch side are
tested by enl-torch's test_convert.py (its Keras worker) and the parity suite.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import enl_core
import enl_keras
from enl_keras import interchange


@keras.saving.register_keras_serializable(package="enl_keras_tests")
class _Wrapper(keras.layers.Layer):
    """A custom layer that keeps a block in an attribute, as user code does."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = enl_keras.NonLocal(zero_init=False, name="inner_nl")

    def call(self, inputs):
        return self.inner(inputs)


def _model():
    inputs = keras.Input((None, None, 8))
    hidden = enl_keras.ENL(dct_weights="learnable", zero_init=False, name="enl_a")(inputs)
    hidden = _Wrapper(name="wrapper")(hidden)
    nested = keras.Sequential([keras.Input((None, None, 8)),
                               enl_keras.ENL(position_encoding=False, name="enl_b")])
    return keras.Model(inputs, nested(hidden))


def test_blocks_are_found_in_nested_models_and_custom_layers():
    assert sorted(interchange.find_blocks(_model())) == ["enl_a", "enl_b", "inner_nl"]


def test_keras_file_npz_round_trip_is_exact(tmp_path):
    model = _model()
    for number, layer in enumerate(interchange.find_blocks(model).values()):
        learnable = getattr(layer, "learnable_dct_weights", False)
        layer.set_block_weights(enl_core.init_params(
            8, seed=number, dct_weights="random" if learnable else None).astype(np.float32))
    x = np.random.default_rng(0).normal(size=(1, 5, 6, 8)).astype("float32")
    path = tmp_path / "model.keras"
    model.save(path)
    files = interchange.keras_file_to_npz(path, tmp_path / "npz")
    assert sorted(files) == ["enl_a", "enl_b", "inner_nl"]
    for name, layer in interchange.find_blocks(model).items():
        exported = enl_core.load_npz(files[name]).as_dict()
        expected = layer.get_block_weights()
        assert exported.keys() == expected.keys()
        for key, value in expected.items():
            np.testing.assert_array_equal(exported[key], value, err_msg=f"{name} {key}")
    # new weights into the file, then read back: the file computes with them
    changed = enl_core.init_params(8, seed=9).astype(np.float32)
    enl_core.save_npz(tmp_path / "new.npz", changed)
    interchange.npz_to_keras_file(path, {"enl_b": tmp_path / "new.npz"},
                                  tmp_path / "changed.keras")
    reloaded = keras.saving.load_model(tmp_path / "changed.keras", compile=False)
    weights = interchange.find_blocks(reloaded)["enl_b"].get_block_weights()
    for key, value in changed.as_dict().items():
        if value is not None:
            np.testing.assert_array_equal(weights[key], value, err_msg=key)
    interchange.npz_to_model(model, {"enl_b": tmp_path / "new.npz"})
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)),
                                  keras.ops.convert_to_numpy(reloaded(x)))


def test_unknown_or_duplicate_block_names_are_errors(tmp_path):
    with pytest.raises(KeyError, match="'missing'.*enl_a"):
        interchange.npz_to_model(_model(), {"missing": tmp_path / "x.npz"})
    inputs = keras.Input((None, None, 4))
    twins = keras.Sequential([keras.Input((None, None, 4)), enl_keras.ENL(name="same")])
    clash = keras.Model(inputs, twins(enl_keras.ENL(name="same")(inputs)))
    with pytest.raises(ValueError, match="'same'"):
        interchange.find_blocks(clash)
