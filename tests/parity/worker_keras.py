"""Parity worker: Keras 3 ``enl_keras.ENL`` / ``NonLocal`` on the backend named
by ``KERAS_BACKEND`` ("tensorflow", "torch" or "jax"; Keras picks it once per process).

Native weight file: a ``.keras`` archive of a one-layer model, which is
backend-independent: the torch-backend worker also loads the file the
TensorFlow-backend worker wrote.
"""

from __future__ import annotations

import os

import numpy as np
import parity_worker

keras = enl_keras = tf = torch = jax = None  # imported by setup(), inside the worker only


class KerasAdapter(parity_worker.Adapter):
    name = f"keras-{os.environ.get('KERAS_BACKEND', 'tensorflow')}"

    def setup(self):
        global keras, enl_keras, tf, torch, jax
        import keras

        import enl_keras
        backend = keras.backend.backend()
        if f"keras-{backend}" != self.name:
            raise RuntimeError(f"KERAS_BACKEND={os.environ.get('KERAS_BACKEND')!r} but Keras "
                               f"runs on {backend!r}")
        if backend == "tensorflow":
            import tensorflow as tf
        elif backend == "torch":
            import torch
        elif backend == "jax":
            import jax
        else:
            raise RuntimeError(f"the parity suite covers the tensorflow, torch and jax "
                               f"backends, received {backend!r}")

    def build(self, spec, weights):
        layer_name, kwargs = parity_worker.block_arguments(spec, weights)
        block = getattr(enl_keras, layer_name)(**kwargs)
        block.set_block_weights(weights)
        return block

    def forward(self, block, x):
        if jax is not None:
            # One XLA compile per case instead of one per op and shape (much faster).
            def call(trainable, non_trainable, inputs):
                return block.stateless_call(trainable, non_trainable, inputs)[0]

            return np.asarray(jax.jit(call)([v.value for v in block.trainable_weights],
                                            [v.value for v in block.non_trainable_weights], x))
        return keras.ops.convert_to_numpy(block(x))

    def forward_and_gradients(self, block, x, r):
        variables = block.trainable_weights
        if tf is not None:
            x, r = tf.constant(x), tf.constant(r)
            with tf.GradientTape() as tape:
                tape.watch(x)
                z = block(x)
                loss = tf.reduce_sum(z * r)
            grads = tape.gradient(loss, [x, *variables])
            z, grads = z.numpy(), [None if g is None else g.numpy() for g in grads]
        elif jax is not None:
            # JAX has no tape: differentiate the layer's pure stateless_call.
            def loss(inputs, trainable):
                z, _ = block.stateless_call(trainable, non_trainable, inputs)
                return (z * r).sum(), z

            non_trainable = [v.value for v in block.non_trainable_weights]
            gradient = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
            (_, z), grads = gradient(jax.numpy.asarray(x), [v.value for v in variables])
            grads = [np.asarray(grads[0]), *(np.asarray(g) for g in grads[1])]
            z = np.asarray(z)
        else:
            x = torch.tensor(x, requires_grad=True)
            z = block(x)
            (z * torch.tensor(r)).sum().backward()
            grads = [x.grad.numpy()] + [
                None if v.value.grad is None else v.value.grad.numpy() for v in variables]
            z = z.detach().numpy()
        return z, _as_block_weights(block, variables, grads)

    def save_native(self, block, spec, x, prefix):
        model = keras.Sequential([keras.Input(shape=x.shape[1:]), block])
        path = prefix + ".keras"
        model.save(path)
        return path

    def load_native(self, spec, path, x, template):
        return keras.saving.load_model(path).layers[-1]

    def load_foreign(self, spec, source, x, directory, config):
        if "native" not in source or not source["native"].endswith(".keras"):
            raise ValueError(f"{self.name} reads .keras files only, received {source}")
        return self.load_native(spec, source["native"], x, None)


def _as_block_weights(block, variables, grads) -> dict:
    """Gradients under their interchange names, mapped by the layer's own
    ``get_block_weights`` (the fused theta | phi | g kernel is split there):
    the variables are overwritten with their gradients, then exported."""
    for variable, grad in zip(variables, grads[1:], strict=True):
        variable.assign(np.zeros(variable.shape, "float32") if grad is None else grad)
    return {**block.get_block_weights(), "x": grads[0]}


if __name__ == "__main__":
    parity_worker.run(KerasAdapter())
