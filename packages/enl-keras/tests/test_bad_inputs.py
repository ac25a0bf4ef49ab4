"""Bad constructor values, generated: every error names the argument and the value.

For the Keras 3 layers (any backend) and, under TensorFlow, their tf_keras
twins. Hypothesis draws bad values per argument; each must raise
``ValueError`` / ``TypeError`` whose message names the argument and shows
the value received (its ``repr``, or for an array its shape).
"""

from __future__ import annotations

import hypothesis
import hypothesis.strategies as st
import keras
import numpy as np
import pytest

import enl_keras

BACKEND = keras.backend.backend()

CLASSES = {"keras3_enl": enl_keras.ENL, "keras3_nonlocal": enl_keras.NonLocal}
if BACKEND == "tensorflow":  # the twins import tf_keras, which needs the TensorFlow backend
    from enl_keras.garden import layers as garden

    CLASSES.update({"tf_keras_enl": garden.ENL, "tf_keras_nonlocal": garden.NonLocal})

not_bool = st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.none(),
                     st.sampled_from(["false", "true", "False", "0"]))
not_positive_int = st.one_of(st.integers(max_value=0), st.booleans(),
                             st.floats(allow_nan=False), st.text(min_size=1, max_size=4))
bad_dct_size = st.one_of(
    st.integers(max_value=0),
    st.tuples(st.integers(max_value=0), st.integers(min_value=1, max_value=9)),
    st.tuples(st.integers(min_value=1, max_value=9), st.integers(max_value=0)),
    st.lists(st.integers(min_value=1, max_value=9), min_size=3, max_size=4),
    st.text(max_size=4), st.floats(allow_nan=False))
bad_name = st.text(max_size=8)
bad_initializer = st.text(alphabet="xyzq_", min_size=1, max_size=8)
# name: (strategy, classes that take the argument, the value rejects by itself)
ARGUMENTS = {
    "inter_channels": (not_positive_int, "all"),
    "zero_init": (not_bool, "all"),
    "use_bias": (not_bool, "all"),
    "position_encoding": (not_bool, "all"),
    "scale": (not_bool, "nonlocal"),
    "sub_sample": (not_bool, "nonlocal"),
    "dct_size": (bad_dct_size, "all"),
    "data_format": (bad_name.filter(lambda v: v not in ("channels_last", "channels_first")),
                    "all"),
    "mode": (bad_name.filter(lambda v: v not in ("dot_product", "embedded_gaussian")),
             "nonlocal"),
    "kernel_initializer": (bad_initializer, "all"),
    "bias_initializer": (bad_initializer, "all"),
    "kernel_regularizer": (bad_initializer, "all"),
    "bias_regularizer": (bad_initializer, "all"),
}
CASES = [(layer, argument) for layer in CLASSES for argument, (_, takes) in ARGUMENTS.items()
         if takes == "all" or layer.endswith(takes)]


def check_named(call, argument, shown):
    with pytest.raises((ValueError, TypeError)) as error:
        call()
    message = str(error.value)
    assert f"`{argument}`" in message, message
    assert shown in message, (shown, message)


@pytest.mark.parametrize("layer, argument", CASES)
@hypothesis.given(data=st.data())
def test_bad_argument_is_named_with_its_value(layer, argument, data):
    value = data.draw(ARGUMENTS[argument][0], label=argument)
    if argument == "inter_channels" and value is None:
        return
    check_named(lambda: CLASSES[layer](**{argument: value}), argument, repr(value))


@pytest.mark.parametrize("layer", [name for name in CLASSES if name.endswith("enl")])
@hypothesis.given(shape=st.tuples(st.integers(1, 6), st.integers(1, 6)).filter(
    lambda s: s != (3, 4)))
def test_dct_weights_of_the_wrong_shape_are_named_with_the_shape(layer, shape):
    check_named(lambda: CLASSES[layer](dct_size=(3, 4), dct_weights=np.ones(shape)),
                "dct_weights", str(shape))


@pytest.mark.parametrize("layer", [name for name in CLASSES if name.endswith("enl")])
@hypothesis.given(value=st.one_of(
    st.text(max_size=6).filter(lambda v: v != "learnable"),
    st.complex_numbers(allow_nan=False, allow_infinity=False).filter(lambda v: v.imag != 0),
    st.sampled_from([np.nan, np.inf, -np.inf])))
def test_bad_dct_weights_are_named(layer, value):
    shown = "complex" if isinstance(value, complex) else repr(value)
    if isinstance(value, float):
        shown = "finite"
    check_named(lambda: CLASSES[layer](dct_size=(2, 2), dct_weights=value), "dct_weights",
                shown)


@pytest.mark.parametrize("layer", sorted(CLASSES))
# ("int8" is not here: Keras reads it as a quantization policy and rejects it itself.)
@hypothesis.given(dtype=st.sampled_from(["int16", "int32", "int64", "uint8", "bool"]))
def test_non_floating_dtype_is_named(layer, dtype):
    check_named(lambda: CLASSES[layer](dtype=dtype), "dtype", repr(dtype))

