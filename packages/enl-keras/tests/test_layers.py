"""enl_keras.ENL and enl_keras.NonLocal (Keras 3) against the enl-core reference.

Runs under every Keras backend, one process each:

    KERAS_BACKEND=tensorflow .venv/bin/python -m pytest packages/enl-keras/tests/test_layers.py
    KERAS_BACKEND=torch      .venv/bin/python -m pytest packages/enl-keras/tests/test_layers.py
    make test-keras-jax   (KERAS_BACKEND=jax, JAX_ENABLE_X64=1 for the float64 cases)

Only the backend in use is imported (TensorFlow-only checks import it inside
the test and are skipped under torch and JAX).
"""

from __future__ import annotations

import functools
import re

import hypothesis
import hypothesis.strategies as st
import keras
import numpy as np
import pytest

import enl_core
import enl_keras
from enl_core.testing import assert_close, max_relative_error

BACKEND = keras.backend.backend()
tensorflow_only = pytest.mark.skipif(BACKEND != "tensorflow",
                                     reason="TensorFlow graphs (tf.function, XLA, SavedModel) "
                                     f"need KERAS_BACKEND=tensorflow, received {BACKEND!r}")

CHANNELS, INTER = 4, 3
GRID = (5, 6)  # H, W: small enough for the explicit N x N reference
CUSTOM_D = np.array([[1.0, 0.5, 0.25, 2.0], [0.75, 1.5, 1.0, 0.0], [1.25, 1.0, 0.5, 1.0]])

# name: (layer class, layer kwargs, reference, init_params kwargs)
CASES = {
    "enl": (enl_keras.ENL, {"dct_size": (3, 4)},
            functools.partial(enl_core.enl_block, dct_size=(3, 4)), {}),
    "enl_clamped_dct": (enl_keras.ENL, {}, enl_core.enl_block, {}),
    "enl_custom_d": (enl_keras.ENL, {"dct_size": (3, 4), "dct_weights": CUSTOM_D},
                     functools.partial(enl_core.enl_block, dct_size=(3, 4)),
                     {"dct_size": (3, 4), "dct_weights": CUSTOM_D}),
    "enl_learnable_d": (enl_keras.ENL, {"dct_size": (2, 3), "dct_weights": "learnable"},
                        functools.partial(enl_core.enl_block, dct_size=(2, 3)),
                        {"dct_size": (2, 3), "dct_weights": "random"}),
    "enl_no_position": (enl_keras.ENL, {"position_encoding": False},
                        functools.partial(enl_core.enl_block, position_encoding=False), {}),
    "nl_gaussian": (enl_keras.NonLocal, {},
                    functools.partial(enl_core.nonlocal_block, mode="embedded_gaussian"), {}),
    "nl_gaussian_unscaled_subsampled": (
        enl_keras.NonLocal, {"scale": False, "sub_sample": True},
        functools.partial(enl_core.nonlocal_block, mode="embedded_gaussian", scale=False,
                          sub_sample=True), {}),
    "nl_dot_product_position": (
        enl_keras.NonLocal, {"mode": "dot_product", "position_encoding": True, "dct_size": (3, 4)},
        functools.partial(enl_core.nonlocal_block, mode="dot_product", position_encoding=True,
                          dct_size=(3, 4)), {}),
}
POLICIES = ["float64", "float32", "mixed_float16", "mixed_bfloat16"]


def to_numpy(tensor):
    return np.asarray(keras.ops.convert_to_numpy(tensor))


def compute_dtype(policy):
    return policy.replace("mixed_", "")


def case_params(name, seed=0):
    """Random (non-zero ``out``) weights for a case, in the shared layout."""
    _, _, _, extra = CASES[name]
    return enl_core.init_params(CHANNELS, INTER, seed=seed, **extra)


def case_layer(name, policy="float32", **overrides):
    cls, kwargs, _, _ = CASES[name]
    layer = cls(inter_channels=INTER, dtype=policy, **{**kwargs, **overrides})
    layer.set_block_weights(case_params(name))
    return layer


def case_input(seed=1, batch=2, grid=GRID):
    return np.random.default_rng(seed).normal(size=(batch, *grid, CHANNELS))


# ------------------------------------------------------------------ outputs
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_match_reference(name, policy):
    layer = case_layer(name, policy)
    x = case_input()
    outputs = layer(x)
    assert keras.backend.standardize_dtype(outputs.dtype) == compute_dtype(policy)
    expected = CASES[name][2](x, case_params(name))
    assert_close(to_numpy(outputs), expected, compute_dtype(policy), err_msg=name)


def test_new_block_is_identity():
    x = case_input().astype("float32")
    for layer in (enl_keras.ENL(), enl_keras.NonLocal()):
        np.testing.assert_array_equal(to_numpy(layer(x)), x)


# ---------------------------------------------------------------- gradients
_REFERENCE_GRADIENTS = {}


def expected_gradient(name, finite_difference):
    if name not in _REFERENCE_GRADIENTS:
        params = case_params(name)
        cotangent = np.random.default_rng(2).normal(size=(2, *GRID, CHANNELS))
        gradient = finite_difference(lambda x: CASES[name][2](x, params), case_input(),
                                     cotangent)
        _REFERENCE_GRADIENTS[name] = cotangent, gradient
    return _REFERENCE_GRADIENTS[name]


@pytest.mark.parametrize("policy", ["float64", "float32", "mixed_float16"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_input_gradients_match_reference(name, policy, input_gradient, finite_difference):
    cotangent, expected = expected_gradient(name, finite_difference)
    layer = case_layer(name, policy)
    x = case_input().astype("float32" if policy.startswith("mixed") else policy)
    actual = input_gradient(layer, x, cotangent)
    assert_close(actual, expected, compute_dtype(policy), gradient=True, err_msg=name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_float64_finite_difference_gradient(name, input_gradient):
    """The layer's own autodiff gradient equals its finite differences (float64),
    along random directions (a gradcheck of the backend's backward pass)."""
    layer = case_layer(name, "float64")
    rng = np.random.default_rng(3)
    x = case_input()
    cotangent = rng.normal(size=x.shape)
    gradient = input_gradient(layer, x, cotangent)

    def value(point):
        return float(np.sum(to_numpy(layer(point)) * cotangent))

    # Small: max pooling (sub_sample) has kinks a long step could cross.
    step = 1e-5
    for _ in range(4):
        direction = rng.normal(size=x.shape)
        numeric = (8.0 * (value(x + step * direction) - value(x - step * direction))
                   - (value(x + 2 * step * direction) - value(x - 2 * step * direction))
                   ) / (12.0 * step)
        assert_close(np.sum(gradient * direction), numeric, "float64", gradient=True,
                     err_msg=name)


@pytest.mark.parametrize("policy, fused", [("float64", True), ("float32", True),
                                           ("mixed_float16", False), ("mixed_bfloat16", False)])
def test_enl_layer_runs_the_hand_written_backward_where_it_applies(policy, fused, monkeypatch):
    """float32 / float64 layers take enl_keras.ops.fused_enl (its custom
    gradient); mixed precision keeps the plain ops, whose casts it needs."""
    calls = []
    original = enl_keras.ops._fused_forward
    monkeypatch.setattr(enl_keras.ops, "_fused_forward",
                        lambda *args: calls.append(1) or original(*args))
    layer = case_layer("enl_learnable_d", policy)
    layer(case_input().astype("float32" if policy.startswith("mixed") else policy))
    assert bool(calls) == fused


# -------------------------------------------------------------- models
def build_model(kind, layer, channels=CHANNELS):
    if kind == "functional":
        inputs = keras.Input((None, None, channels))
        return keras.Model(inputs, layer(inputs))
    if kind == "sequential":
        return keras.Sequential([keras.Input((None, None, channels)), layer])

    class Residual(keras.Model):
        def __init__(self, block, **kwargs):
            super().__init__(**kwargs)
            self.block = block

        def call(self, inputs):
            return self.block(inputs)

    return Residual(layer)


@pytest.mark.parametrize("kind", ["functional", "sequential", "subclassed"])
@pytest.mark.parametrize("cls", [enl_keras.ENL, enl_keras.NonLocal])
def test_model_kinds_train_and_take_any_size(kind, cls):
    """Unknown batch, H, W: one model serves several sizes, and a training
    step moves every weight (out first, the others once out is non-zero)."""
    layer = cls(zero_init=False)
    model = build_model(kind, layer)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    rng = np.random.default_rng(0)
    for shape in [(2, 8, 6, CHANNELS), (1, 5, 11, CHANNELS)]:
        x = rng.normal(size=shape).astype("float32")
        np.testing.assert_allclose(to_numpy(model(x)), to_numpy(layer(x)), rtol=0, atol=0)
    before = [to_numpy(w).copy() for w in model.trainable_weights]
    x = rng.normal(size=(2, 8, 6, CHANNELS)).astype("float32")
    model.train_on_batch(x, np.zeros_like(x))
    after = [to_numpy(w) for w in model.trainable_weights]
    assert len(after) == 4 and all(np.any(a != b) for a, b in zip(after, before, strict=True))


@pytest.mark.parametrize("cls", [enl_keras.ENL, enl_keras.NonLocal])
def test_channels_first_matches_channels_last(cls):
    x = case_input().astype("float32")
    last = cls(zero_init=False)
    first = cls(zero_init=False, data_format="channels_first")
    first.set_block_weights(last.get_block_weights() if last.built else _built(last, x))
    expected = to_numpy(last(x))
    actual = to_numpy(first(np.transpose(x, (0, 3, 1, 2))))
    np.testing.assert_allclose(np.transpose(actual, (0, 2, 3, 1)), expected, rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_allclose(to_numpy(first.attention_map(np.transpose(x, (0, 3, 1, 2)), 7)),
                               to_numpy(last.attention_map(x, 7)), rtol=1e-6, atol=1e-6)
    inputs = keras.Input((CHANNELS, None, None))
    assert keras.Model(inputs, first(inputs)).output_shape == (None, CHANNELS, None, None)


def _built(layer, x):
    layer(x)
    return layer.get_block_weights()


@tensorflow_only
@pytest.mark.parametrize("cls", [enl_keras.ENL, enl_keras.NonLocal])
def test_tf_function_and_xla_with_unknown_shapes(cls):
    import tensorflow as tf

    layer = cls(zero_init=False)
    signature = [tf.TensorSpec((None, None, None, CHANNELS), tf.float32)]
    graph = tf.function(layer, input_signature=signature)
    xla = tf.function(layer, jit_compile=True)
    rng = np.random.default_rng(0)
    for shape in [(2, 8, 6, CHANNELS), (3, 5, 12, CHANNELS)]:
        x = rng.normal(size=shape).astype("float32")
        eager = to_numpy(layer(x))
        np.testing.assert_allclose(graph(tf.constant(x)).numpy(), eager, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(xla(tf.constant(x)).numpy(), eager, rtol=1e-5, atol=1e-5)
    model = build_model("functional", layer)
    model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    x = rng.normal(size=(2, 8, 6, CHANNELS)).astype("float32")
    loss = model.train_on_batch(x, np.zeros_like(x))
    assert np.isfinite(loss)


def test_keras_save_and_load(tmp_path):
    inputs = keras.Input((None, None, CHANNELS))
    hidden = enl_keras.ENL(dct_weights="learnable", dct_size=(3, 3), zero_init=False)(inputs)
    hidden = enl_keras.ENL(dct_size=(2, 3), dct_weights=CUSTOM_D[:2, :3], zero_init=False,
                           data_format="channels_first")(keras.ops.transpose(hidden,
                                                                             (0, 3, 1, 2)))
    hidden = keras.ops.transpose(hidden, (0, 2, 3, 1))
    outputs = enl_keras.NonLocal(sub_sample=True, zero_init=False, use_bias=False)(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mse")
    x = case_input().astype("float32")
    model.train_on_batch(x, np.zeros_like(x))  # d moves away from ones
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    for shape in [x.shape, (1, 7, 9, CHANNELS)]:
        probe = np.random.default_rng(1).normal(size=shape).astype("float32")
        np.testing.assert_array_equal(to_numpy(loaded(probe)), to_numpy(model(probe)))
    assert [type(layer).__name__ for layer in loaded.layers[1:] if "enl" in layer.name or
            "non_local" in layer.name] == ["ENL", "ENL", "NonLocal"]


@tensorflow_only
def test_export_saved_model_with_dynamic_grid(tmp_path):
    import tensorflow as tf

    inputs = keras.Input((None, None, CHANNELS))
    model = keras.Model(inputs, enl_keras.ENL(zero_init=False, dct_size=(3, 4))(inputs))
    model.export(str(tmp_path / "exported"), verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "exported"))
    graph = tf.function(model, input_signature=[tf.TensorSpec((None, None, None, CHANNELS))])
    for shape in [(2, 8, 6, CHANNELS), (1, 13, 5, CHANNELS)]:
        x = tf.constant(np.random.default_rng(2).normal(size=shape).astype("float32"))
        served = reloaded.serve(x).numpy()
        # Identical to the model's own graph; eager differs only by float32 rounding.
        np.testing.assert_array_equal(served, graph(x).numpy())
        assert_close(served, to_numpy(model(x)), "float32")


# -------------------------------------------------------- mixed precision
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_large_n_accumulates_in_float32(policy):
    """N = 65,536 (256 x 256) with activations up to 1e3: the sums over N
    exceed the float16 range, the output must not."""
    height = width = 256
    params = enl_core.init_params(8, seed=0, scale=0.01)
    x = np.random.default_rng(0).uniform(-1e3, 1e3, size=(1, height, width, 8))
    flat = x.reshape(-1, 8)
    phi_g = (flat @ params.phi_kernel + params.phi_bias).T @ (flat @ params.g_kernel
                                                               + params.g_bias)
    assert np.abs(phi_g).max() > 65504.0  # a float16 sum over N would overflow
    layer = enl_keras.ENL(dtype=policy)
    layer.set_block_weights(params)
    outputs = layer(x.astype("float32"))
    assert keras.backend.standardize_dtype(outputs.dtype) == compute_dtype(policy)
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in layer.weights)
    actual = to_numpy(keras.ops.cast(outputs, "float32"))
    assert np.all(np.isfinite(actual))
    assert max_relative_error(actual, enl_core.enl_block(x, params)) < 1e-2


def test_mixed_precision_training_step(mixed_policy):
    mixed_policy("mixed_float16")
    model = build_model("functional", enl_keras.ENL(dct_weights="learnable", zero_init=False))
    model.compile(optimizer="adam", loss="mse")
    x = case_input().astype("float32")
    loss = model.train_on_batch(x, np.zeros_like(x))
    assert np.isfinite(loss)
    assert keras.backend.standardize_dtype(model.layers[-1].dct_weights.dtype) == "float32"


# ----------------------------------------------------- no N x N in ENL
def _largest_traced_tensors(fn, shape):
    """(elements of the largest tensor, all fully defined?) in the TF graph of
    ``fn`` and of its input gradient, traced (not run) for a static input."""
    import tensorflow as tf

    def forward_and_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return y, tape.gradient(y, x)

    graph = tf.function(forward_and_backward).get_concrete_function(
        tf.TensorSpec(shape, tf.float32)).graph
    sizes, defined = [], True
    for operation in graph.get_operations():
        for tensor in operation.outputs:
            if tensor.dtype.is_integer and tensor.shape.rank == 1:
                continue  # shape bookkeeping (e.g. BroadcastGradientArgs): at most rank long
            if tensor.shape.rank is None or not tensor.shape.is_fully_defined():
                defined = False
            else:
                sizes.append(tensor.shape.num_elements())
    return max(sizes), defined


def _largest_torch_tensors(fn, shape):
    """Largest tensor any torch op of ``fn`` (forward and backward) creates,
    on fake tensors (shapes only, no memory)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for tensor in torch.utils._pytree.tree_leaves(out):
                if isinstance(tensor, torch.Tensor):
                    Recorder.largest = max(Recorder.largest, tensor.numel())
            return out

    with FakeTensorMode(allow_non_fake_inputs=True), Recorder():
        x = torch.zeros(shape, requires_grad=True)
        fn(x).sum().backward()
    return Recorder.largest, True


def _largest_jax_tensors(fn, shape):
    """Largest array in the jaxpr of ``fn``'s forward and backward (sub-jaxprs
    included), traced on abstract values (shapes only, no memory)."""
    import jax

    def largest_in(jaxpr):
        size = 0
        for equation in jaxpr.eqns:
            for var in equation.outvars:
                size = max(size, int(np.prod(var.aval.shape)))
            for param in equation.params.values():
                for sub in param if isinstance(param, (tuple, list)) else (param,):
                    sub = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                    if hasattr(sub, "eqns"):
                        size = max(size, largest_in(sub))
        return size

    traced = jax.make_jaxpr(jax.grad(lambda x: fn(x).sum()))(
        jax.ShapeDtypeStruct(shape, "float32"))
    return largest_in(traced.jaxpr), True


LARGEST_TENSORS = {"tensorflow": _largest_traced_tensors, "torch": _largest_torch_tensors,
                   "jax": _largest_jax_tensors}


def test_enl_never_builds_an_n_by_n_tensor():
    """At N = 65,536 no intermediate of ENL (forward, backward, attention map)
    has N^2 elements; the same check finds NonLocal's affinity."""
    n = 256 * 256
    shape = (1, 256, 256, 8)
    largest = LARGEST_TENSORS[BACKEND]
    enl = enl_keras.ENL(zero_init=False)
    nonlocal_block = enl_keras.NonLocal(zero_init=False)
    for layer in (enl, nonlocal_block):
        layer.build(shape)
    size, defined = largest(enl, shape)
    assert defined, "every ENL tensor must have a static shape for a static input"
    assert size < n * n and size <= 3 * n * 8, size
    size, _ = largest(lambda x: enl.attention_map(x, (17, 200)), shape)
    assert size < n * n, size
    size, _ = largest(nonlocal_block, shape)
    assert size >= n * n, size


# ------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, error, match", [
    ({"inter_channels": 0}, ValueError, "inter_channels.*0"),
    ({"inter_channels": -3}, ValueError, "inter_channels.*-3"),
    ({"inter_channels": 2.5}, TypeError, "inter_channels.*2.5"),
    ({"dct_size": (0, 9)}, ValueError, r"dct_size.*\(0, 9\)"),
    ({"dct_size": (9,)}, ValueError, r"dct_size.*\(9,\)"),
    ({"dct_size": "big"}, ValueError, "dct_size.*big"),
    ({"dct_weights": np.ones((3, 3))}, ValueError, r"dct_weights.*\(3, 3\)"),
    ({"dct_weights": np.full((9, 9), np.nan)}, ValueError, "dct_weights.*finite"),
    ({"dct_weights": "trainable"}, ValueError, "dct_weights.*trainable"),
    ({"dct_weights": "learnable", "position_encoding": False}, ValueError, "dct_weights"),
    ({"data_format": "NHWC"}, ValueError, "data_format.*NHWC"),
    ({"zero_init": "yes"}, TypeError, "zero_init.*yes"),
])
def test_enl_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        enl_keras.ENL(**kwargs)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"mode": "gaussian"}, ValueError, "mode.*gaussian"),
    ({"inter_channels": 0}, ValueError, "inter_channels.*0"),
    ({"data_format": "NCHW"}, ValueError, "data_format.*NCHW"),
    ({"position_encoding": True}, ValueError, "position_encoding.*embedded_gaussian"),
    ({"mode": "dot_product", "position_encoding": True, "sub_sample": True}, ValueError,
     "position_encoding.*sub_sample"),
    ({"dct_size": (3, -1)}, ValueError, "dct_size"),
])
def test_nonlocal_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        enl_keras.NonLocal(**kwargs)


@pytest.mark.parametrize("cls", [enl_keras.ENL, enl_keras.NonLocal])
def test_bad_inputs_are_named(cls):
    with pytest.raises(ValueError, match=r"inputs.*rank 4.*\(2, 8, 4\)"):
        cls()(np.zeros((2, 8, 4), "float32"))
    with pytest.raises(ValueError, match=r"inputs.*known channel.*None"):
        cls()(keras.Input((None, None, None)))
    with pytest.raises(TypeError, match="inputs.*floating.*int32"):
        cls()(np.zeros((1, 4, 4, 2), "int32"))
    layer = cls()
    layer(np.zeros((1, 4, 4, 2), "float32"))
    with pytest.raises(ValueError, match=r"inputs.*C=2.*\(1, 4, 4, 3\)"):
        layer(np.zeros((1, 4, 4, 3), "float32"))
    with pytest.raises(ValueError, match=r"inputs.*rank 4.*channels_first"):
        cls(data_format="channels_first").compute_output_shape((None, 4, 4))


# ------------------------------------------- config and serialization
@pytest.mark.parametrize("layer", [
    enl_keras.ENL(inter_channels=5, dct_size=(3, 4), dct_weights=CUSTOM_D, use_bias=False,
                  data_format="channels_first", name="custom"),
    enl_keras.ENL(dct_weights="learnable", zero_init=False),
    enl_keras.NonLocal(mode="dot_product", scale=False, position_encoding=True, dct_size=7),
    enl_keras.NonLocal(sub_sample=True, inter_channels=2),
], ids=["enl_fixed_d", "enl_learnable", "nl_dot", "nl_sub"])
def test_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.get_config() == config
    shape = (None, 9, 10, 6) if layer.data_format == "channels_last" else (None, 6, 9, 10)
    assert layer.compute_output_shape(shape) == shape


@pytest.mark.parametrize("kwargs", [{}, {"inter_channels": 64}, {"use_bias": False},
                                    {"dct_weights": "learnable", "dct_size": (5, 7)}])
def test_parameter_count_matches_cost_model(kwargs):
    layer = enl_keras.ENL(**kwargs)
    layer.build((None, None, None, 256))
    assert layer.count_params() == enl_core.cost.block_params(
        256, kwargs.get("inter_channels"), use_bias=kwargs.get("use_bias", True),
        dct_size=kwargs.get("dct_size"), learnable_dct_weights="dct_weights" in kwargs)
    if not kwargs:
        assert layer.count_params() == 131_712  # docs/ENL-SPEC.md, C = 256


# ------------------------------------------------- weight interchange
@pytest.mark.parametrize("name", sorted(CASES))
def test_block_weights_round_trip_exactly(name, tmp_path):
    layer = case_layer(name, "float32")
    weights = layer.get_block_weights()
    expected = case_params(name).astype(np.float32).as_dict()
    assert sorted(weights) == sorted(expected)
    for key, value in expected.items():
        assert weights[key].dtype.kind == "f"
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
    layer.save_npz(tmp_path / "block.npz")
    other = CASES[name][0](inter_channels=INTER, **CASES[name][1])
    other.load_npz(tmp_path / "block.npz")  # builds the unbuilt layer
    for key, value in other.get_block_weights().items():
        np.testing.assert_array_equal(value, weights[key], err_msg=key)
    x = case_input().astype("float32")
    np.testing.assert_array_equal(to_numpy(other(x)), to_numpy(layer(x)))


def test_set_block_weights_errors():
    params = enl_core.init_params(CHANNELS, INTER, seed=0)
    layer = enl_keras.ENL(inter_channels=INTER)
    with pytest.raises(TypeError, match="weights.*list"):
        layer.set_block_weights([params])
    broken = params.as_dict()
    del broken["g.bias"]
    with pytest.raises(ValueError, match="missing.*g.bias"):
        layer.set_block_weights(broken)
    layer.set_block_weights(params)
    with pytest.raises(ValueError, match=r"theta.kernel.*\(4, 3\).*\(6, 3\)"):
        layer.set_block_weights(enl_core.init_params(6, INTER))
    with pytest.raises(ValueError, match=r"theta.kernel.*\(4, 3\).*\(4, 2\)"):
        layer.set_block_weights(enl_core.init_params(CHANNELS, 2))
    with pytest.raises(ValueError, match="dct_weights"):
        layer.set_block_weights(enl_core.init_params(CHANNELS, INTER, dct_size=(9, 9),
                                                     dct_weights="random"))
    with pytest.raises(ValueError, match="use_bias=False"):
        enl_keras.ENL(inter_channels=INTER, use_bias=False).set_block_weights(params)
    with pytest.raises(ValueError, match=r"get_block_weights\(\) needs a built layer"):
        enl_keras.NonLocal().get_block_weights()
    learnable = enl_keras.ENL(inter_channels=INTER, dct_size=(2, 2), dct_weights="learnable")
    with pytest.raises(ValueError, match=r"dct_weights.*\(2, 2\).*\(9, 9\)"):
        learnable.set_block_weights(enl_core.init_params(CHANNELS, INTER, dct_size=(9, 9),
                                                         dct_weights="random"))


# ------------------------------------------------------- attention map
@pytest.mark.parametrize("position", [0, 17, (4, 5), (2, 0)])
@pytest.mark.parametrize("name", ["enl", "enl_custom_d", "enl_no_position"])
def test_enl_attention_map_matches_reference(name, position):
    layer = case_layer(name, "float64")
    x = case_input()
    _, kwargs, _, _ = CASES[name]
    expected = enl_core.attention_map(
        x, case_params(name), position, block="enl",
        position_encoding=kwargs.get("position_encoding", True),
        dct_size=kwargs.get("dct_size", (9, 9)))
    actual = to_numpy(layer.attention_map(x, position))
    assert actual.shape == (2, *GRID)
    assert_close(actual, expected, "float64")


@pytest.mark.parametrize("name", ["nl_gaussian", "nl_dot_product_position",
                                  "nl_gaussian_unscaled_subsampled"])
def test_nonlocal_attention_map_is_its_affinity_row(name):
    layer = case_layer(name, "float64")
    _, kwargs, reference, _ = CASES[name]
    x = case_input()
    affinity = enl_core.nonlocal_affinity(x, case_params(name), **reference.keywords)
    index = 2 * GRID[1] + 3
    actual = to_numpy(layer.attention_map(x, (2, 3)))
    grid = (GRID[0] // 2, GRID[1] // 2) if kwargs.get("sub_sample") else GRID
    assert actual.shape == (2, *grid)
    assert_close(actual.reshape(2, -1), affinity[:, index, :], "float64")


def test_attention_map_rejects_positions_outside_the_grid():
    layer = case_layer("enl")
    x = case_input().astype("float32")
    for position in [30, -1, (5, 0), (0, 6), "a"]:
        with pytest.raises(ValueError, match="position"):
            layer.attention_map(x, position)
    with pytest.raises(ValueError, match="attention_map.*known H, W"):
        layer.attention_map(keras.Input((None, None, CHANNELS), batch_size=1), 0)


# --------------------------------------------------- properties, docs
@hypothesis.given(height=st.integers(1, 9), width=st.integers(1, 9),
                  channels=st.integers(1, 6), inter=st.integers(1, 4),
                  dct_size=st.tuples(st.integers(1, 10), st.integers(1, 10)),
                  seed=st.integers(0, 2**16))
def test_enl_matches_reference_for_any_size(height, width, channels, inter, dct_size, seed):
    """Any grid (1 x 1 included, smaller or larger than dct_size), C, C'."""
    params = enl_core.init_params(channels, inter, seed=seed)
    x = np.random.default_rng(seed).normal(size=(2, height, width, channels))
    layer = enl_keras.ENL(inter_channels=inter, dct_size=dct_size, dtype="float64")
    layer.set_block_weights(params)
    assert_close(to_numpy(layer(x)), enl_core.enl_block(x, params, dct_size=dct_size), "float64")


def test_docstring_examples_run():
    import doctest

    import enl_keras.layers

    result = doctest.testmod(enl_keras.layers, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0


# ------------------------------------------- grids, dtypes, dct_weights
@pytest.mark.parametrize("shape", [(1, 0, 0, 4), (1, 0, 5, 4), (1, 5, 0, 4)])
@pytest.mark.parametrize("cls", [enl_keras.ENL, enl_keras.NonLocal])
def test_empty_grid_is_named(cls, shape):
    message = f"non-empty H x W grid, received shape {shape}"
    with pytest.raises(ValueError, match=re.escape(message)):
        cls()(np.zeros(shape, "float32"))


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8", "bool"])
@pytest.mark.parametrize("cls", [enl_keras.ENL, enl_keras.NonLocal])
def test_non_floating_dtype_is_named(cls, dtype):
    with pytest.raises(ValueError, match=f"`dtype` of {cls.__name__}.*'{dtype}'"):
        cls(dtype=dtype)


def test_complex_dct_weights_are_rejected():
    with pytest.raises(TypeError, match="`dct_weights` must be real.*complex"):
        enl_keras.ENL(dct_size=(2, 2), dct_weights=np.ones((2, 2)) * (1 + 0.5j))


@pytest.mark.skipif(BACKEND != "torch", reason="a torch tensor needs KERAS_BACKEND=torch "
                    "(TensorFlow and torch never share a process here)")
def test_torch_tensor_that_requires_grad_is_named_as_dct_weights():
    import torch

    weights = torch.ones((2, 2), requires_grad=True)
    with pytest.raises(TypeError, match="`dct_weights` must be .*numpy-convertible array"):
        enl_keras.ENL(dct_size=(2, 2), dct_weights=weights)
    layer = enl_keras.ENL(dct_size=(2, 2), dct_weights=weights.detach())  # detached: accepted
    np.testing.assert_array_equal(layer.fixed_dct_weights, np.ones((2, 2)))


@pytest.mark.parametrize("grid", [(6, 6), (3, 8), (1, 1)])
def test_dct_size_is_cropped_to_the_grid_before_any_work(grid):
    """Same output as the clamped size, and the bases never exceed the grid."""
    params = enl_core.init_params(CHANNELS, INTER, seed=3)
    x = np.random.default_rng(3).normal(size=(1, *grid, CHANNELS))
    huge = enl_keras.ENL(inter_channels=INTER, dct_size=(2000, 3000), dtype="float64")
    huge.set_block_weights(params)
    clamped = enl_keras.ENL(inter_channels=INTER, dct_size=grid, dtype="float64")
    clamped.set_block_weights(params)
    assert_close(to_numpy(huge(x)), to_numpy(clamped(x)), "float64")
    assert_close(to_numpy(huge(x)), enl_core.enl_block(x, params, dct_size=(2000, 3000)),
                 "float64")
    scale = huge._dct_scale(keras.ops.convert_to_tensor(x))
    assert tuple(scale.shape) == grid  # d^2 holds only the grid's frequencies
    assert tuple(enl_keras.ops.crop_dct_scale(keras.ops.ones((2000, 3000)), *grid).shape) == grid


# ------------------------------------------- sub_sample at call time
@pytest.mark.parametrize("shape", [(1, 1, 4, 4), (1, 4, 1, 4), (1, 1, 1, 4)])
def test_sub_sample_needs_two_by_two_at_every_call(shape):
    layer = enl_keras.NonLocal(sub_sample=True)
    layer(np.ones((1, 4, 4, 4), "float32"))  # built on a valid grid
    with pytest.raises(ValueError, match=re.escape(f"`sub_sample` of NonLocal needs H, W >= 2 "
                                                   f"(2x2 pooling of the keys), received "
                                                   f"shape {shape}")):
        layer(np.ones(shape, "float32"))
    channels_first = enl_keras.NonLocal(sub_sample=True, data_format="channels_first")
    with pytest.raises(ValueError, match="sub_sample.*H, W >= 2"):
        channels_first(np.ones((1, 4, 1, 4), "float32"))


@tensorflow_only
def test_sub_sample_check_runs_in_a_graph_with_dynamic_shapes():
    import tensorflow as tf

    layer = enl_keras.NonLocal(sub_sample=True)
    layer(np.ones((1, 4, 4, 4), "float32"))
    graph = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 4))])
    assert graph(np.ones((1, 4, 6, 4), "float32")).shape == (1, 4, 6, 4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="sub_sample.*H, W >= 2"):
        graph(np.ones((1, 1, 6, 4), "float32"))


# ------------------------------------------- initializers and regularizers
@pytest.mark.parametrize("cls", [enl_keras.ENL, enl_keras.NonLocal])
def test_initializers_and_regularizers_like_multi_head_attention(cls):
    layer = cls(kernel_initializer=keras.initializers.Constant(0.5), bias_initializer="ones",
                kernel_regularizer=keras.regularizers.L2(1e-2),
                bias_regularizer=keras.regularizers.L1(1e-3), zero_init=False)
    layer(np.ones((1, 4, 4, 4), "float32"))
    np.testing.assert_array_equal(to_numpy(layer.projection_kernel), 0.5)
    np.testing.assert_array_equal(to_numpy(layer.output_kernel), 0.5)
    np.testing.assert_array_equal(to_numpy(layer.projection_bias), 1.0)
    np.testing.assert_array_equal(to_numpy(layer.output_bias), 1.0)
    kernels = [to_numpy(layer.projection_kernel), to_numpy(layer.output_kernel)]
    biases = [to_numpy(layer.projection_bias), to_numpy(layer.output_bias)]
    expected = sorted([1e-2 * float(np.sum(k**2)) for k in kernels]
                      + [1e-3 * float(np.sum(np.abs(b))) for b in biases])
    assert sorted(float(to_numpy(loss)) for loss in layer.losses) == pytest.approx(expected)
    config = layer.get_config()
    assert config["kernel_regularizer"]["config"]["l2"] == pytest.approx(1e-2)
    clone = cls.from_config(config)
    assert clone.get_config() == config
    clone(np.ones((1, 4, 4, 4), "float32"))
    np.testing.assert_array_equal(to_numpy(clone.projection_kernel), 0.5)


@pytest.mark.parametrize("cls", [enl_keras.ENL, enl_keras.NonLocal])
def test_zero_init_wins_over_the_initializers_for_out(cls):
    layer = cls(kernel_initializer="ones", bias_initializer="ones")  # zero_init=True
    layer(np.ones((1, 4, 4, 4), "float32"))
    np.testing.assert_array_equal(to_numpy(layer.projection_kernel), 1.0)
    np.testing.assert_array_equal(to_numpy(layer.projection_bias), 1.0)
    np.testing.assert_array_equal(to_numpy(layer.output_kernel), 0.0)
    np.testing.assert_array_equal(to_numpy(layer.output_bias), 0.0)
    x = np.random.default_rng(0).normal(size=(1, 4, 4, 4)).astype("float32")
    np.testing.assert_array_equal(to_numpy(layer(x)), x)  # still the identity at init
    assert cls().get_config()["kernel_initializer"] is None  # None: the block's own defaults
