"""ENL and NonLocal as Keras 3 layers (any backend).

The layer logic is :mod:`enl_keras.blocks` and the math :mod:`enl_keras.ops`;
this module binds them to ``keras.layers.Layer``. The tf_keras twins for
Model Garden are in :mod:`enl_keras.garden.layers`.
"""

from __future__ import annotations

import keras

from enl_keras import blocks


@keras.saving.register_keras_serializable(package="enl_keras")
class ENL(blocks.ENLBlock, keras.layers.Layer):
    """Efficient Non-Local block (Levi & Ullman, BMVC 2019, eq. 6 and 9).

    ``z = out(theta^T (phi g) / N + E-hat (E-hat^T g)) + x``: the dot-product
    non-local block of Wang et al. evaluated in the associative order, so the
    N x N affinity is never built (memory C'^2, cost O(N C C')), plus the
    relative-position term from the kH x kW lowest 2D-DCT frequencies (eq. 8-11,
    applied separably). Equal to ``enl_core.enl_block`` for the same weights.
    ``out`` starts at zero, so a new block is the identity and can be placed
    into a pretrained network. The sums over N (``phi g``, the DCT
    coefficients) run in float32 under mixed precision. In float32 / float64
    the block has a hand-written backward (``enl_keras.ops.fused_enl``, a
    ``keras.ops.custom_gradient``) that keeps only x, the three projections
    and y for the backward pass.

    Args:
        inter_channels: C', the width of theta, phi, g; default ``max(C // 2, 1)``.
        position_encoding: add the DCT position term (the paper's ENL).
        dct_size: (kH, kW) or an int, the kept low frequencies; clamped to
            (H, W) for smaller inputs.
        dct_weights: d (eq. 10): None (all ones, the paper), a fixed
            (kH, kW) array, or ``"learnable"`` (a trainable d, initialised to 1).
        zero_init: zero-initialise ``out`` (identity block at init).
        use_bias: biases on the four 1x1 projections.
        data_format: ``"channels_last"`` (B, H, W, C) or ``"channels_first"``.
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...).

    Input / output shape: (B, H, W, C) (channels_last) with any B, H, W; C
    must be known and fixed after the first call.

    Besides the Layer API: ``attention_map(inputs, position)`` (the affinity
    row of one query, Fig. 1), ``get_block_weights()`` /
    ``set_block_weights(weights)`` (the shared layout of
    ``enl_core.params``, exact both ways) and ``save_npz(path)`` /
    ``load_npz(path)`` (the framework-neutral file).

    Raises:
        ValueError: ``inter_channels`` <= 0, malformed ``dct_size`` or
            ``dct_weights``, unknown ``data_format``; at build / call, an
            input of rank != 4, with unknown or changed channel count.
        TypeError: a non-integer ``inter_channels``, a non-floating input.

    Example:

    >>> import keras, enl_keras
    >>> inputs = keras.Input((None, None, 32))
    >>> outputs = enl_keras.ENL(dct_size=(9, 9))(inputs)
    >>> model = keras.Model(inputs, outputs)
    >>> tuple(model(keras.ops.ones((2, 24, 20, 32))).shape)
    (2, 24, 20, 32)
    >>> tuple(model.layers[-1].attention_map(keras.ops.ones((2, 24, 20, 32)), (3, 7)).shape)
    (2, 24, 20)
    """

    _initializers = keras.initializers
    _regularizers = keras.regularizers
    _fixed_dtype_weight = {"autocast": False}


@keras.saving.register_keras_serializable(package="enl_keras")
class NonLocal(blocks.NonLocalBlock, keras.layers.Layer):
    """The non-local block of Wang et al. (CVPR 2018), the paper's "NL" baseline.

    ``z = out(A g) + x`` with the N x N' affinity A materialised:
    ``embedded_gaussian`` (softmax over j of ``theta_i . phi_j``, scaled by
    ``1/sqrt(C')`` when ``scale``; eq. 3) or ``dot_product``
    (``theta_i . phi_j / N'``; eq. 5). Memory and cost grow as N^2: this is
    what ENL removes. Equal to ``enl_core.nonlocal_block`` for the same
    weights. The affinity runs in float32 under mixed precision.

    Args:
        mode: ``"embedded_gaussian"`` or ``"dot_product"``.
        inter_channels: C'; default ``max(C // 2, 1)``.
        scale: divide the embedded-Gaussian logits by ``sqrt(C')``.
        sub_sample: 2x2 max pooling of phi and g (N' = N / 4), as Wang et al.
        position_encoding: add ENL's DCT term, i.e. ``(F + L) g`` (dot
            product without sub-sampling only): the explicit form ENL equals.
        dct_size: (kH, kW) of the position term.
        zero_init, use_bias, data_format, **kwargs: as in :class:`ENL`.

    Raises:
        ValueError: unknown ``mode`` or ``data_format``; ``position_encoding``
            with ``embedded_gaussian`` or ``sub_sample``; ``inter_channels`` <= 0;
            bad inputs as in :class:`ENL`.

    Example:

    >>> import keras, enl_keras
    >>> layer = enl_keras.NonLocal(mode="embedded_gaussian", sub_sample=True)
    >>> tuple(layer(keras.ops.ones((1, 16, 16, 8))).shape)
    (1, 16, 16, 8)
    """

    _initializers = keras.initializers
    _regularizers = keras.regularizers
