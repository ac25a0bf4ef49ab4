"""ENL and NonLocal as tf_keras layers, for TF Model Garden.

Model Garden (``official.vision``) is written against tf_keras (Keras 2), and
a Keras 3 layer inside a tf_keras model builds but its weights are silently
not tracked. These twins are ``tf_keras.layers.Layer`` subclasses with the
same arguments, weights and behaviour as :class:`enl_keras.ENL` and
:class:`enl_keras.NonLocal`: the layer logic is the same mixin
(:mod:`enl_keras.blocks`) and the math the same ``keras.ops`` functions
(:mod:`enl_keras.ops`), which, with Keras 3's TensorFlow backend, run on the
``tf.Tensor`` a tf_keras layer receives. Weights are created with tf_keras
``add_weight`` (so they are tracked, checkpointed and trained), and the layers
follow tf_keras mixed-precision policies (float32 variables, inputs and
projections in the compute dtype, sums over N in float32).

Channels-last, as Model Garden; ``data_format="channels_first"`` works too.
"""

from __future__ import annotations

import keras

if keras.backend.backend() != "tensorflow":
    raise ImportError("enl_keras.garden needs Keras 3's TensorFlow backend (the tf_keras twins "
                      "run keras.ops on tf.Tensors); received KERAS_BACKEND="
                      f"{keras.backend.backend()!r}")

import tf_keras  # noqa: E402

from enl_keras import blocks  # noqa: E402

_register = tf_keras.saving.register_keras_serializable(package="enl_keras.garden")


@_register
class ENL(blocks.ENLBlock, tf_keras.layers.Layer):
    """tf_keras twin of :class:`enl_keras.ENL` (Levi & Ullman, BMVC 2019, eq. 6, 9).

    Same arguments, weights (``get_block_weights``/``set_block_weights``,
    ``save_npz``/``load_npz``), ``attention_map`` and numbers as the Keras 3
    layer; see its docstring.

    Example:

    >>> import tf_keras
    >>> from enl_keras.garden.layers import ENL
    >>> inputs = tf_keras.Input((None, None, 64))
    >>> model = tf_keras.Model(inputs, ENL()(inputs))
    >>> len(model.trainable_weights)
    4
    """

    _initializers = tf_keras.initializers
    _regularizers = tf_keras.regularizers
    _fixed_dtype_weight = {"experimental_autocast": False}


@_register
class NonLocal(blocks.NonLocalBlock, tf_keras.layers.Layer):
    """tf_keras twin of :class:`enl_keras.NonLocal` (Wang et al., CVPR 2018).

    Same arguments, weights and numbers as the Keras 3 layer; see its docstring.

    Example:

    >>> import tf_keras
    >>> from enl_keras.garden.layers import NonLocal
    >>> layer = NonLocal(mode="embedded_gaussian", sub_sample=True)
    >>> tuple(layer(tf_keras.backend.ones((1, 8, 8, 4))).shape)
    (1, 8, 8, 4)
    """

    _initializers = tf_keras.initializers
    _regularizers = tf_keras.regularizers
