"""Parity worker: the tf_keras twins ``enl_keras.garden.layers.ENL`` / ``NonLocal``
(the layers Model Garden models are built from).

Native weight file: a TensorFlow object-based checkpoint
(``tf.train.Checkpoint``), the format Model Garden saves and restores.
"""

from __future__ import annotations

import os

import numpy as np
import parity_protocol as protocol
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

    def top_down_forward_and_gradients(self, spec, weights, laterals, cotangents):
        # Model Garden is imported only for this job: it costs seconds.
        from enl_keras.garden.modeling.decoders.enl_fpn import ENLFPN

        shapes, channels = protocol.top_down_shapes(spec), spec["channels"]
        # The decoder refuses a position term for NL blocks (they have none).
        position = ({"dct_size": spec["dct_size"], "position_encoding": spec["position_encoding"]}
                    if spec["block"] == "enl" else {})
        decoder = ENLFPN(
            input_specs={str(level): tf.TensorShape([None, *shape[1:]])
                         for level, shape in shapes.items()},
            min_level=min(shapes), max_level=max(shapes), num_filters=channels,
            block_levels=spec["block_levels"], block=spec["block"],
            inter_channels=spec["inter_channels"], **position)
        # Identity lateral (1x1) and output (3x3) convolutions and norm: the
        # decoder's outputs are then its top-down stream fed with `laterals`.
        identity, zeros = np.eye(channels, dtype=np.float32), np.zeros(channels, np.float32)
        center = np.zeros((3, 3, channels, channels), np.float32)
        center[1, 1] = identity
        for level in shapes:
            decoder.get_layer(f"lateral_{level}").set_weights([identity[None, None], zeros])
            decoder.get_layer(f"post_hoc_{level}").set_weights([center, zeros])
            norm = decoder.get_layer(f"norm_{level}")
            norm.set_weights([zeros + 1, zeros, zeros, zeros + (1 - norm.epsilon)])
        blocks = decoder.blocks
        for level, block in blocks.items():
            block.set_block_weights(weights[level])

        inputs = {str(level): tf.constant(value) for level, value in laterals.items()}
        variables = {level: block.trainable_weights for level, block in blocks.items()}
        with tf.GradientTape() as tape:
            tape.watch(list(inputs.values()))
            outputs = decoder(inputs, training=False)
            loss = tf.add_n([tf.reduce_sum(outputs[str(level)] * cotangents[level])
                             for level in shapes])
        grads = tape.gradient(loss, [inputs, variables])
        named = {f"lat.{level}": grads[0][str(level)].numpy() for level in shapes}
        for level, block in blocks.items():
            block_grads = [None] + [None if g is None else g.numpy() for g in grads[1][level]]
            for name, value in _as_block_weights(block, variables[level], block_grads).items():
                if name != "x":
                    named[f"{level}.{name}"] = value
        return {level: outputs[str(level)].numpy() for level in shapes}, named


if __name__ == "__main__":
    parity_worker.run(TfKerasAdapter())
