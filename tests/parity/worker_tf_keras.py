"""Parity worker: the tf_keras twins ``enl_keras.garden.layers.ENL`` / ``NonLocal``
(the layers Model Garden models are built from).

Native weight file: a TensorFlow object-based checkpoint
(``tf.train.Checkpoint``), the format Model Garden saves and restores.
"""

from __future__ import annotations

import os

import parity_worker
from worker_keras import _as_block_weights

tf = garden_layers = None  # imported by setup(), inside the worker only


class TfKerasAdapter(parity_worker.Adapter):
    name = "tf_keras"

    def setup(self):
        global tf, garden_layers
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        import tensorflow as tf

        from enl_keras.garden import layers as garden_layers

    def build(self, spec, weights):
        layer_name, kwargs = parity_worker.block_arguments(spec, weights)
        block = getattr(garden_layers, layer_name)(**kwargs)
        block.set_block_weights(weights)
        return block

    def forward(self, block, x):
        return block(tf.constant(x)).numpy()

    def forward_and_gradients(self, block, x, r):
        x, r = tf.constant(x), tf.constant(r)
        variables = block.trainable_weights
        with tf.GradientTape() as tape:
            tape.watch(x)
            z = block(x)
            loss = tf.reduce_sum(z * r)
        grads = tape.gradient(loss, [x, *variables])
        grads = [None if g is None else g.numpy() for g in grads]
        return z.numpy(), _as_block_weights(block, variables, grads)

    def save_native(self, block, spec, x, prefix):
        return tf.train.Checkpoint(block=block).write(prefix + ".ckpt")

    def load_native(self, spec, path, x, template):
        layer_name, kwargs = parity_worker.block_arguments(spec, template)
        block = getattr(garden_layers, layer_name)(**kwargs)
        block(tf.constant(x))  # build, so that every variable is restored at once
        tf.train.Checkpoint(block=block).read(path).assert_consumed()
        return block


if __name__ == "__main__":
    parity_worker.run(TfKerasAdapter())
