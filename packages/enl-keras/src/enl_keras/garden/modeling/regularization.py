"""Model Garden's L2 weight decay for the (E)NL blocks' kernels.

Model Garden passes one ``kernel_regularizer`` to every convolution it builds
(``losses.l2_weight_decay``); the block layers create their kernels with
``add_weight`` and take no regularizer argument, so the same penalty is
attached here, as tf_keras does for ``add_weight(regularizer=...)``: a
callable loss per kernel, collected in ``model.losses`` and added to the
task's total loss.
"""

from __future__ import annotations

import tf_keras


def regularize_kernels(layer: tf_keras.layers.Layer,
                       regularizer: tf_keras.regularizers.Regularizer | None) -> None:
    """Adds ``regularizer(kernel)`` to ``layer.losses`` for each built kernel.

    Args:
        layer: a built block (its kernels are weights named ``*kernel*``).
        regularizer: Model Garden's L2 regularizer, or None (nothing added).

    Raises:
        ValueError: if ``layer`` is not built yet.
    """
    if regularizer is None:
        return
    if not layer.built:
        raise ValueError(f"`layer` must be built before its kernels are regularized, "
                         f"received unbuilt layer {layer.name!r}")
    for weight in layer.trainable_weights:
        if "kernel" in weight.name:
            # Bind the variable now: a late-binding lambda would see the last one.
            layer.add_loss(lambda weight=weight: regularizer(weight))
