"""The tf_keras twins (enl_keras.garden.layers) used by the Model Garden models.

They must track their weights inside tf_keras models, follow tf_keras
mixed-precision policies, and compute exactly what the Keras 3 layers compute
(the same mixin and keras.ops math): equal outputs, equal gradients, and
interchangeable weights. TensorFlow backend only.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

if keras.backend.backend() != "tensorflow":
    pytest.skip("the tf_keras twins need KERAS_BACKEND=tensorflow", allow_module_level=True)

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

import enl_core  # noqa: E402
import enl_keras  # noqa: E402
from enl_core.testing import assert_close, max_relative_error  # noqa: E402
from enl_keras.garden import layers as garden  # noqa: E402

CHANNELS = 6
TWINS = [
    ("enl", garden.ENL, enl_keras.ENL, {"dct_size": (3, 4)}),
    ("enl_learnable_d", garden.ENL, enl_keras.ENL, {"dct_size": (2, 3),
                                                    "dct_weights": "learnable"}),
    ("nl_gaussian_subsampled", garden.NonLocal, enl_keras.NonLocal, {"sub_sample": True}),
    ("nl_dot_product_position", garden.NonLocal, enl_keras.NonLocal,
     {"mode": "dot_product", "position_encoding": True}),
]
IDS = [name for name, *_ in TWINS]


def random_params(kwargs, seed=0):
    extra = ({"dct_size": kwargs["dct_size"], "dct_weights": "random"}
             if kwargs.get("dct_weights") == "learnable" else {})
    return enl_core.init_params(CHANNELS, seed=seed, **extra)


def inputs(shape=(2, 7, 9, CHANNELS), seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize("name, twin_cls, keras_cls, kwargs", TWINS, ids=IDS)
def test_twin_equals_keras3_layer(name, twin_cls, keras_cls, kwargs):
    """Same weights: identical outputs and input gradients, and both equal enl-core."""
    params = random_params(kwargs)
    twin, layer = twin_cls(**kwargs), keras_cls(**kwargs)
    twin.set_block_weights(params)
    layer.set_block_weights(params)
    x = tf.constant(inputs())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        twin_out, layer_out = twin(x), layer(x)
    np.testing.assert_array_equal(twin_out.numpy(), layer_out.numpy())
    np.testing.assert_array_equal(tape.gradient(twin_out, x).numpy(),
                                  tape.gradient(layer_out, x).numpy())
    np.testing.assert_array_equal(twin.attention_map(x, (3, 4)).numpy(),
                                  layer.attention_map(x, (3, 4)).numpy())
    twin64 = twin_cls(dtype="float64", **kwargs)
    twin64.set_block_weights(params)
    x64 = inputs().astype("float64")
    reference = (enl_core.enl_block if twin_cls is garden.ENL else enl_core.nonlocal_block)
    reference_kwargs = {k: v for k, v in kwargs.items() if k != "dct_weights"}
    if twin_cls is garden.NonLocal:
        reference_kwargs.setdefault("mode", "embedded_gaussian")
    assert_close(twin64(x64).numpy(), reference(x64, params, **reference_kwargs), "float64")


@pytest.mark.parametrize("name, twin_cls, keras_cls, kwargs", TWINS, ids=IDS)
def test_twin_weights_are_tracked_and_trained(name, twin_cls, keras_cls, kwargs, tmp_path):
    block = twin_cls(zero_init=False, **kwargs)
    model_inputs = tf_keras.Input((None, None, CHANNELS))
    features = tf_keras.layers.Conv2D(CHANNELS, 1)(model_inputs)
    model = tf_keras.Model(model_inputs, block(features))
    expected = 5 if kwargs.get("dct_weights") == "learnable" else 4
    assert len(block.trainable_weights) == expected
    assert all(any(w is v for v in model.trainable_weights) for w in block.trainable_weights)
    before = [w.numpy().copy() for w in block.trainable_weights]
    model.compile(optimizer=tf_keras.optimizers.SGD(0.1), loss="mse")
    x = inputs()
    model.fit(x, np.zeros_like(x), epochs=1, verbose=0)
    assert all(np.any(w.numpy() != b) for w, b in zip(block.trainable_weights, before,
                                                         strict=True))
    # Checkpoints carry the block: a fresh model restores the same outputs.
    model.save_weights(str(tmp_path / "ckpt"))
    clone = tf_keras.models.clone_model(model)
    clone.load_weights(str(tmp_path / "ckpt"))
    np.testing.assert_array_equal(clone(x).numpy(), model(x).numpy())


def test_twin_saves_and_loads_as_keras_file(tmp_path):
    model_inputs = tf_keras.Input((None, None, CHANNELS))
    hidden = garden.ENL(dct_weights="learnable", zero_init=False)(model_inputs)
    model = tf_keras.Model(model_inputs, garden.NonLocal(zero_init=False)(hidden))
    path = tmp_path / "twin.keras"
    model.save(path)
    loaded = tf_keras.models.load_model(path)
    for shape in [(2, 7, 9, CHANNELS), (1, 12, 5, CHANNELS)]:
        x = inputs(shape)
        np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    assert isinstance(loaded.layers[1], garden.ENL)
    assert loaded.layers[1].get_config() == model.layers[1].get_config()


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_twin_follows_mixed_precision_policy(policy, mixed_policy):
    mixed_policy(policy, tf_keras)
    params = enl_core.init_params(8, seed=0, scale=0.01)
    block = garden.ENL()
    x = np.random.default_rng(0).uniform(-1e3, 1e3, size=(1, 256, 256, 8))
    block.set_block_weights(params)
    outputs = block(x.astype("float32"))
    assert outputs.dtype == policy.replace("mixed_", "")
    assert all(w.dtype == tf.float32 for w in block.weights)
    actual = tf.cast(outputs, tf.float32).numpy()
    assert np.all(np.isfinite(actual))
    assert max_relative_error(actual, enl_core.enl_block(x, params)) < 1e-2


def test_twin_under_xla_with_unknown_shapes():
    block = garden.ENL(zero_init=False)
    graph = tf.function(block, jit_compile=True)
    dynamic = tf.function(block, input_signature=[tf.TensorSpec((None, None, None, CHANNELS))])
    for shape in [(2, 7, 9, CHANNELS), (1, 12, 5, CHANNELS)]:
        x = inputs(shape)
        eager = block(x).numpy()
        assert_close(graph(x).numpy(), eager, "float32")
        assert_close(dynamic(x).numpy(), eager, "float32")


def test_weights_move_between_keras3_and_twin_through_npz(tmp_path):
    layer = enl_keras.ENL(dct_weights="learnable", zero_init=False)
    x = inputs()
    layer(x)
    layer.dct_weights.assign(np.random.default_rng(0).uniform(0.5, 1.5, (9, 9)))
    layer.save_npz(tmp_path / "block.npz")
    twin = garden.ENL(dct_weights="learnable")
    twin.load_npz(tmp_path / "block.npz")
    np.testing.assert_array_equal(twin(x).numpy(), keras.ops.convert_to_numpy(layer(x)))
    for key, value in twin.get_block_weights().items():
        np.testing.assert_array_equal(value, layer.get_block_weights()[key], err_msg=key)


def test_twin_config_and_errors():
    block = garden.NonLocal(mode="dot_product", scale=False, sub_sample=True, inter_channels=2)
    config = block.get_config()
    assert garden.NonLocal.from_config(config).get_config() == config
    restored = tf_keras.layers.deserialize(tf_keras.layers.serialize(block))
    assert type(restored) is garden.NonLocal
    with pytest.raises(ValueError, match="inter_channels.*0"):
        garden.ENL(inter_channels=0)
    with pytest.raises(ValueError, match="mode.*softmax"):
        garden.NonLocal(mode="softmax")
    with pytest.raises(ValueError, match=r"inputs.*rank 4"):
        garden.ENL()(np.zeros((2, 3, 4), "float32"))
    with pytest.raises(TypeError, match="inputs.*floating"):
        garden.ENL()(np.zeros((1, 3, 4, 2), "int32"))
    with pytest.raises(ValueError, match="inputs.*known channel"):
        garden.ENL()(tf_keras.Input((None, None, None)))


def test_twin_docstring_examples_run():
    import doctest

    result = doctest.testmod(garden, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0


@pytest.mark.parametrize("keras_cls", [enl_keras.ENL, enl_keras.NonLocal])
def test_keras3_block_in_a_tf_keras_model_names_the_twin(keras_cls):
    """Its weights would not be tracked by tf_keras: an error, not silence."""
    name = keras_cls.__name__
    match = f"enl_keras.{name} is a Keras 3 layer.*enl_keras.garden.layers.{name}"
    inputs = tf_keras.Input((8, 8, 4))
    with pytest.raises(TypeError, match=f"{match}") as functional:
        keras_cls()(inputs)
    assert "tf_keras functional model" in str(functional.value)

    class Subclassed(tf_keras.Model):
        def __init__(self):
            super().__init__(name="subclassed")
            self.block = keras_cls()

        def call(self, x):
            return self.block(x)

    with pytest.raises(TypeError, match=f"{match}") as subclassed:
        Subclassed()(np.ones((1, 8, 8, 4), "float32"))
    assert "tf_keras layer 'subclassed'" in str(subclassed.value)
    # The twin, and the Keras 3 layer outside tf_keras, are unaffected.
    twin_cls = getattr(garden, name)
    model = tf_keras.Model(inputs, twin_cls()(inputs))
    assert len(model.trainable_weights) == 4
    assert keras_cls()(np.ones((1, 8, 8, 4), "float32")).shape == (1, 8, 8, 4)


@pytest.mark.parametrize("twin_cls", [garden.ENL, garden.NonLocal])
def test_twin_takes_tf_keras_initializers_and_regularizers(twin_cls):
    layer = twin_cls(kernel_initializer=tf_keras.initializers.Constant(0.25),
                     kernel_regularizer=tf_keras.regularizers.l2(1e-2),
                     bias_regularizer="l1", zero_init=False)
    inputs = tf_keras.Input((8, 8, 4))
    model = tf_keras.Model(inputs, layer(inputs))
    np.testing.assert_array_equal(layer.projection_kernel.numpy(), 0.25)
    kernels = [layer.projection_kernel.numpy(), layer.output_kernel.numpy()]
    # The model's losses hold one term per kernel (the biases are zero: l1 of 0).
    assert sorted(float(loss) for loss in model.losses) == pytest.approx(sorted(
        [0.0, 0.0] + [1e-2 * float(np.sum(k**2)) for k in kernels]))
    config = layer.get_config()
    assert config["kernel_regularizer"]["config"]["l2"] == pytest.approx(1e-2)
    assert twin_cls.from_config(config).get_config() == config
    with pytest.raises(ValueError, match="`kernel_regularizer` must be None or a Keras "
                                         "regularizer.*'l3'"):
        twin_cls(kernel_regularizer="l3")
