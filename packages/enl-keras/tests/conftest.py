"""Fixtures for the enl-keras tests: what differs between Keras backends.

The layer tests run under ``KERAS_BACKEND=tensorflow``, ``=torch`` and ``=jax``
(one process each; JAX with ``JAX_ENABLE_X64=1`` for the float64 cases). Only
the backend in use is imported here: gradients go through
``tf.GradientTape``, ``torch.autograd`` or ``jax.grad``.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()


def gradients(function, arrays, cotangent):
    """d <function(*arrays), cotangent> / d each array, as float64 numpy arrays (any backend).

    The output is cast to float64 before the product, so a float32 or mixed
    function's own backward is what is measured.
    """
    if BACKEND == "tensorflow":
        import tensorflow as tf

        inputs = [tf.constant(a) for a in arrays]
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(tf.cast(function(*inputs), "float64") * cotangent)
        return [g.numpy().astype(np.float64) for g in tape.gradient(loss, inputs)]
    if BACKEND == "torch":
        import torch

        inputs = [torch.tensor(a, requires_grad=True) for a in arrays]
        loss = (function(*inputs).double() * torch.tensor(cotangent, dtype=torch.float64)).sum()
        loss.backward()
        return [t.grad.detach().cpu().numpy().astype(np.float64) for t in inputs]
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        def loss(*inputs):
            return jnp.sum(function(*inputs).astype(jnp.float64) * cotangent)

        grads = jax.grad(loss, argnums=tuple(range(len(arrays))))(
            *[jnp.asarray(a) for a in arrays])
        return [np.asarray(g, dtype=np.float64) for g in grads]
    raise NotImplementedError(f"no gradient helper for KERAS_BACKEND={BACKEND!r}")


def input_gradient(layer, x, cotangent):
    """d <layer(x), cotangent> / dx as a float64 numpy array (any backend)."""
    return gradients(layer, [x], cotangent)[0]


# Keras 3.15 on JAX computes the cosine of a float64 tensor in float32
# (keras/src/backend/jax/numpy.py: cos casts to result_type(x, float), which
# is float32 on every backend but TensorFlow), so the float64 DCT basis, and
# everything built on it, is only float32-accurate there. These float64
# checks against the reference run on TensorFlow and torch; on JAX they skip.
JAX_FLOAT64_DCT_TESTS = {
    "test_dct_basis_is_the_reference_basis_with_clamping_as_a_mask",
    "test_position_term_is_l_times_g",
    "test_enl_and_explicit_nonlocal_are_the_same_function",
    "test_enl_attention_map_matches_reference",
    "test_nonlocal_attention_map_is_its_affinity_row",
    "test_enl_matches_reference_for_any_size",
    "test_dct_size_is_cropped_to_the_grid_before_any_work",
}


def pytest_collection_modifyitems(items):
    if BACKEND != "jax":
        return
    skip = pytest.mark.skip(reason="Keras on JAX computes float64 cos in float32 "
                                   "(see JAX_FLOAT64_DCT_TESTS in conftest.py)")
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if item.originalname in JAX_FLOAT64_DCT_TESTS or "float64" in params.values():
            item.add_marker(skip)


def finite_difference(function, x, cotangent, step=1e-4):
    """d <function(x), cotangent> / dx by the 4-point central stencil, per element.

    Error O(step^4): negligible against the float64 tolerances for the
    smooth (polynomial or softmax) blocks tested here.
    """
    x = np.asarray(x, dtype=np.float64)
    gradient = np.zeros_like(x)
    flat = gradient.reshape(-1)

    def value(offset, index):
        shifted = x.copy().reshape(-1)
        shifted[index] += offset
        return float(np.sum(np.asarray(function(shifted.reshape(x.shape)), np.float64)
                            * cotangent))

    for index in range(x.size):
        flat[index] = (8.0 * (value(step, index) - value(-step, index))
                       - (value(2 * step, index) - value(-2 * step, index))) / (12.0 * step)
    return gradient


@pytest.fixture(name="input_gradient")
def input_gradient_fixture():
    """:func:`input_gradient` (helpers are fixtures: the repository root has
    its own ``conftest`` module)."""
    return input_gradient


@pytest.fixture(name="gradients")
def gradients_fixture():
    """:func:`gradients`."""
    return gradients


@pytest.fixture(name="finite_difference")
def finite_difference_fixture():
    """:func:`finite_difference`."""
    return finite_difference


@pytest.fixture
def mixed_policy():
    """Sets a global dtype policy for one test and restores float32 after.

    ``mixed_policy(name)`` sets Keras 3's; ``mixed_policy(name, tf_keras)``
    sets that module's (the tf_keras twins have their own global policy).
    """
    touched = set()

    def set_policy(name, module=keras):
        touched.add(module)
        module.mixed_precision.set_global_policy(name)
    yield set_policy
    for module in touched:
        module.mixed_precision.set_global_policy("float32")
