"""ResNet with one non-local block in the bottom-up stream ("+1NL, BU").

The baseline of the paper's Tables 1 and 2, after Wang et al. ("Non-local
Neural Networks", CVPR 2018, Sec. 5): one embedded-Gaussian non-local block
right before the last residual block of res4 (Model Garden's level 4,
``block_group_l4``). Everything else is Model Garden's ``ResNet``: its
``__init__`` calls ``_block_group`` once per stage, and this subclass wraps
that stage's block constructor so the last block of the chosen stage is
preceded by the non-local block. Parameter names, stem and the other blocks
are unchanged, so an ImageNet ResNet checkpoint still loads (the non-local
block starts as the identity: its output projection is zero-initialised).
"""

from __future__ import annotations

import itertools

import tensorflow as tf
import tf_keras
from official.modeling import hyperparams
from official.vision.modeling.backbones import factory, resnet

from enl_core.validation import positive_int
from enl_keras.garden import layers as garden_layers
from enl_keras.garden.modeling.decoders.checks import check_bool, norm_activation_kwargs

NL_LEVELS = (2, 3, 4, 5)


@tf_keras.utils.register_keras_serializable(package="ENL")
class ResNetNL(resnet.ResNet):
    """Model Garden ResNet plus one embedded-Gaussian NonLocal block.

    Args:
        model_id: ResNet depth (18, 50, 101, ... as in Model Garden).
        nl_level: stage that gets the block, 2..5 (res2..res5); default 4.
            The block goes before the stage's last residual block (before its
            only block when the stage has one).
        nl_inter_channels: C' of the block; None means C // 2.
        nl_scale: a bool, scale the affinity by 1/sqrt(C') (Wang et al.'s
            code does).
        **kwargs: Model Garden ``ResNet`` arguments.

    The block gets Model Garden's ``kernel_regularizer`` / ``bias_regularizer``
    as its own arguments, as the stages' convolutions do.

    Raises:
        ValueError: naming `nl_level` or `nl_inter_channels`.
        TypeError: naming `nl_scale` when it is not a bool.

    Example:
        >>> backbone = ResNetNL(model_id=18, input_specs=tf_keras.layers.InputSpec(
        ...     shape=[None, 128, 128, 3]))
        >>> backbone.get_layer("nonlocal_l4").name
        'nonlocal_l4'
    """

    def __init__(self, model_id: int, nl_level: int = 4, nl_inter_channels: int | None = None,
                 nl_scale: bool = True, **kwargs):
        if nl_level not in NL_LEVELS:
            raise ValueError(f"`nl_level` must be one of {NL_LEVELS} (res2..res5), "
                             f"received {nl_level!r}")
        self._nl_level = int(nl_level)
        self._nl_inter_channels = (None if nl_inter_channels is None
                                   else positive_int("nl_inter_channels", nl_inter_channels))
        self._nl_scale = check_bool("nl_scale", nl_scale)
        super().__init__(model_id=model_id, **kwargs)

    def _block_group(self, inputs: tf.Tensor, filters: int, strides: int, block_fn,
                     block_repeats: int = 1, stochastic_depth_drop_rate: float = 0.0,
                     name: str = "block_group"):
        # ResNet.__init__ names the stage of level l "block_group_l{l}".
        if name != f"block_group_l{self._nl_level}":
            return super()._block_group(inputs, filters, strides, block_fn, block_repeats,
                                        stochastic_depth_drop_rate, name)
        calls = itertools.count(1)

        def block_fn_with_nonlocal(**block_kwargs):
            residual_block = block_fn(**block_kwargs)
            if next(calls) < block_repeats:
                return residual_block
            non_local = garden_layers.NonLocal(
                mode="embedded_gaussian", inter_channels=self._nl_inter_channels,
                scale=self._nl_scale, name=f"nonlocal_l{self._nl_level}",
                kernel_regularizer=self._kernel_regularizer,
                bias_regularizer=self._bias_regularizer)
            return lambda x: residual_block(non_local(x))

        return super()._block_group(inputs, filters, strides, block_fn_with_nonlocal,
                                    block_repeats, stochastic_depth_drop_rate, name)

    def get_config(self):
        return {**super().get_config(), "nl_level": self._nl_level,
                "nl_inter_channels": self._nl_inter_channels, "nl_scale": self._nl_scale}


@factory.register_backbone_builder("resnet_nl")
def build_resnet_nl(
    input_specs: tf_keras.layers.InputSpec,
    backbone_config: hyperparams.Config,
    norm_activation_config: hyperparams.Config,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
) -> tf_keras.Model:
    """Builds a ``ResNetNL`` from a backbone config of type ``resnet_nl``."""
    if backbone_config.type != "resnet_nl":
        raise ValueError(f"Inconsistent backbone type {backbone_config.type!r}; "
                         "need 'resnet_nl'.")
    cfg = backbone_config.get()
    return ResNetNL(
        model_id=cfg.model_id,
        nl_level=cfg.nl_level,
        nl_inter_channels=cfg.nl_inter_channels,
        nl_scale=cfg.nl_scale,
        input_specs=input_specs,
        depth_multiplier=cfg.depth_multiplier,
        stem_type=cfg.stem_type,
        resnetd_shortcut=cfg.resnetd_shortcut,
        replace_stem_max_pool=cfg.replace_stem_max_pool,
        se_ratio=cfg.se_ratio,
        init_stochastic_depth_rate=cfg.stochastic_depth_drop_rate,
        scale_stem=cfg.scale_stem,
        **norm_activation_kwargs(norm_activation_config, l2_regularizer),
        bn_trainable=cfg.bn_trainable)
