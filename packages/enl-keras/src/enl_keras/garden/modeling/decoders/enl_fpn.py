"""ENL-FPN: Model Garden's FPN with (E)NL blocks along the top-down stream.

The FPN top-down stream computes ``P5 = lat(C5)`` and
``P_l = lat(C_l) + upsample(P_{l+1})``. A block is applied to the merged
feature of each chosen level *before* it is upsampled into the next finer
level, so every block sees what the coarser blocks passed down (coarse to
fine; docs/ENL-SPEC.md "Coarse-to-fine placement", paper Sec. 3.3, "+3ENL, TD").

Model Garden's ``FPN`` builds its whole functional graph inside ``__init__``
with no hook between the merge and the upsampling, so ``ENLFPN`` subclasses it
for everything else (input pyramid, ``get_config`` / ``from_config``,
``output_specs``, serialization name space) and lays out the same graph with
the same layer names (``lateral_l``, ``post_hoc_l``, ``coarser_l``,
``norm_l``): an FPN checkpoint loads into an ENL-FPN, and with the blocks'
zero-initialised output projection the two compute the same function.

``block_input_norm`` (off by default, which is the paper's placement) puts a
norm layer in front of each block's branch: ``n = norm(x)``,
``z = x + (block(n) - n)``. ``block_norm`` picks it: "batch" (the FPN's own
batch norm) or "layer" (a layer norm over the channels of each position, as
in pre-LN transformers: no running statistics, so training and inference
normalise alike). ENL's dot-product
affinity ``theta^T (phi g) / N`` is cubic in its input and nothing
normalises the merged top-down feature, so when the stack is trained from
scratch each block amplifies what the coarser block passed down until it
overflows. With "batch", inference uses running statistics that lag
behind the training batches early in training, and the cubic affinity
amplifies the mismatch block after block (seen as eval-time collapses of a
short run whose training loss was fine); "layer" has no such statistics.
The block's own residual ``n + branch(n)`` is swapped for
``x + branch(n)``: the un-normalised stream still flows on, and with the
zero-initialised output projection ``z == x`` at initialisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
import tf_keras
from official.modeling import hyperparams, tf_utils
from official.vision.modeling.decoders import factory, fpn
from official.vision.ops import spatial_transform_ops

from enl_core.fpn import DEFAULT_BLOCK_LEVELS, check_block, check_block_levels, check_block_norm
from enl_core.validation import DEFAULT_DCT_SIZE
from enl_keras.garden import layers as garden_layers
from enl_keras.garden.modeling.decoders.checks import (
    check_bool,
    check_dct_size,
    check_enl_only,
    check_inter_channels,
    norm_activation_kwargs,
    resolve_block_levels,
)


def build_block(block: str, level: int, inter_channels: int | None, dct_size,
                position_encoding: bool, **weight_args) -> tf_keras.layers.Layer:
    """One top-down block: ENL, or the embedded-Gaussian NL baseline.

    NL has no relative-position term in the paper's tables, so
    ``position_encoding`` and ``dct_size`` apply to ENL only (the decoder
    rejects them for NL). ``weight_args``: the blocks' ``kernel_regularizer``
    and ``bias_regularizer`` (Model Garden's L2 weight decay).
    """
    if block == "enl":
        return garden_layers.ENL(inter_channels=inter_channels,
                                 position_encoding=position_encoding,
                                 dct_size=tuple(dct_size), name=f"enl_{level}", **weight_args)
    return garden_layers.NonLocal(mode="embedded_gaussian", inter_channels=inter_channels,
                                  name=f"nl_{level}", **weight_args)


@tf_keras.utils.register_keras_serializable(package="ENL")
class ENLFPN(fpn.FPN):
    """Feature Pyramid Network with (E)NL blocks on its top-down stream.

    Same arguments and outputs as Model Garden's ``FPN`` (a dict keyed by
    level strings, ``num_filters`` channels on every level), plus:

    Args:
        block_levels: levels that get a block; None means (5, 4, 3). Applied
            coarse to fine; each must lie in [min_level, backbone max level]
            (:func:`enl_core.fpn.check_block_levels`, the rule of
            ``enl_torch.detection`` too).
        block: "enl" (default) or "nl" (embedded-Gaussian non-local).
        inter_channels: C' of each block; None means C // 2.
        dct_size: (kH, kW) of ENL's position term; None:
            ``enl_core.DEFAULT_DCT_SIZE``, (9, 9). ENL only (for "nl" anything
            but None raises).
        position_encoding: ENL's relative-position term; None: True. ENL
            only, as ``dct_size``.
        block_input_norm: a bool (a string such as 'false' raises): feed
            each block's branch a normalised input
            (``x + block(norm(x)) - norm(x)``, norm = the FPN's batch norm
            with ``use_sync_bn`` / ``norm_momentum`` / ``norm_epsilon``);
            default False (the paper's placement). See the module docstring.
        block_norm: the norm of ``block_input_norm``: "batch" (default, the
            FPN's batch norm) or "layer" (layer norm over channels, with
            ``norm_epsilon``).
        levels: deprecated name of ``block_levels`` (``DeprecationWarning``).

    The blocks get ``kernel_regularizer`` / ``bias_regularizer`` as their own
    arguments, so Model Garden's weight decay reaches their kernels as it
    reaches the convolutions' (``model.losses``).

    Raises:
        ValueError: naming `block_levels`, `block`, `block_norm`, `dct_size` or
            `inter_channels`, or `position_encoding` / `dct_size` set for "nl".
        TypeError: naming `block_input_norm` or `position_encoding` when not
            a bool.

    Example:
        >>> specs = {str(l): tf.TensorShape([None, 256 // 2**l, 256 // 2**l, 64])
        ...          for l in range(2, 6)}
        >>> decoder = ENLFPN(input_specs=specs, min_level=2, max_level=6,
        ...                  num_filters=64, block_levels=(5, 4, 3))
        >>> sorted(decoder.output_specs)
        ['2', '3', '4', '5', '6']
    """

    def __init__(
        self,
        input_specs: Mapping[str, tf.TensorShape],
        min_level: int = 3,
        max_level: int = 7,
        num_filters: int = 256,
        fusion_type: str = "sum",
        use_separable_conv: bool = False,
        use_keras_layer: bool = False,
        activation: str = "relu",
        use_sync_bn: bool = False,
        norm_momentum: float = 0.99,
        norm_epsilon: float = 0.001,
        kernel_initializer: str = "VarianceScaling",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bias_regularizer: tf_keras.regularizers.Regularizer | None = None,
        block_levels: Sequence[int] | None = None,
        block: str = "enl",
        inter_channels: int | None = None,
        dct_size: Sequence[int] | int | None = None,
        position_encoding: bool | None = None,
        block_input_norm: bool = False,
        block_norm: str = "batch",
        levels: Sequence[int] | None = None,
        **kwargs):
        # A deprecated `levels` is named as such in any error about its value.
        levels_name = "block_levels" if levels is None else "levels"
        block_levels = resolve_block_levels(block_levels, levels)
        block = check_block(block)
        block_norm = check_block_norm(block_norm)
        check_enl_only(block, position_encoding, dct_size)
        dct_size = check_dct_size(DEFAULT_DCT_SIZE if dct_size is None else dct_size)
        position_encoding = check_bool("position_encoding",
                                       True if position_encoding is None else position_encoding)
        block_input_norm = check_bool("block_input_norm", block_input_norm)
        inter_channels = check_inter_channels(inter_channels)
        if fusion_type not in ("sum", "concat"):
            raise ValueError(f"`fusion_type` must be 'sum' or 'concat', received {fusion_type!r}")
        self._config_dict = {
            "input_specs": input_specs,
            "min_level": min_level,
            "max_level": max_level,
            "num_filters": num_filters,
            "fusion_type": fusion_type,
            "use_separable_conv": use_separable_conv,
            "use_keras_layer": use_keras_layer,
            "activation": activation,
            "use_sync_bn": use_sync_bn,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": kernel_regularizer,
            "bias_regularizer": bias_regularizer,
            "block_levels": None,  # set below, once checked against the pyramid
            "block": block,
            "inter_channels": inter_channels,
            "dct_size": dct_size if block == "enl" else None,
            "position_encoding": position_encoding if block == "enl" else None,
            "block_input_norm": block_input_norm,
            "block_norm": block_norm,
        }
        conv2d = (tf_keras.layers.SeparableConv2D if use_separable_conv
                  else tf_keras.layers.Conv2D)
        conv_args = dict(padding="same", kernel_initializer=kernel_initializer,
                         kernel_regularizer=kernel_regularizer,
                         bias_regularizer=bias_regularizer)
        bn_axis = -1 if tf_keras.backend.image_data_format() == "channels_last" else 1
        if bn_axis != -1:
            raise ValueError("`ENLFPN` needs image_data_format 'channels_last' (the blocks "
                             "are channels-last), received 'channels_first'")

        inputs = self._build_input_pyramid(input_specs, min_level)
        backbone_max_level = min(int(max(inputs.keys())), max_level)
        # Blocks live on the top-down stream, [min_level, backbone_max_level];
        # the coarser RetinaNet-style levels are not part of it.
        block_levels = check_block_levels(block_levels,
                                          range(min_level, backbone_max_level + 1),
                                          name=levels_name)
        self._config_dict["block_levels"] = block_levels
        blocks = {level: build_block(block, level, inter_channels, dct_size, position_encoding,
                                     kernel_regularizer=kernel_regularizer,
                                     bias_regularizer=bias_regularizer)
                  for level in block_levels}

        def norm_layer(name, kind="batch"):
            if kind == "layer":
                return tf_keras.layers.LayerNormalization(axis=-1, epsilon=norm_epsilon,
                                                          name=name)
            return tf_keras.layers.BatchNormalization(
                axis=bn_axis, momentum=norm_momentum, epsilon=norm_epsilon,
                synchronized=use_sync_bn, name=name)

        block_norms = ({level: norm_layer(f"{block}_norm_{level}", block_norm)
                        for level in block_levels}
                       if block_input_norm else {})

        def apply_block(level, feature):
            if level not in blocks:
                return feature
            if level in block_norms:
                # Only the branch sees the normalised feature (see module docstring).
                normed = block_norms[level](feature)
                branch = blocks[level](normed) - normed
                output = feature + branch
            else:
                output = blocks[level](feature)
            return output

        feats_lateral = {
            level: conv2d(filters=num_filters, kernel_size=1, name=f"lateral_{level}",
                          **conv_args)(inputs[str(level)])
            for level in range(min_level, backbone_max_level + 1)
        }

        # Top-down path: merge, then the block, then upsample into the next level.
        feats = {str(backbone_max_level): apply_block(backbone_max_level,
                                                      feats_lateral[backbone_max_level])}
        for level in range(backbone_max_level - 1, min_level - 1, -1):
            upsampled = spatial_transform_ops.nearest_upsampling(
                feats[str(level + 1)], 2, use_keras_layer=use_keras_layer)
            lateral = feats_lateral[level]
            if fusion_type == "sum":
                merged = (tf_keras.layers.Add()([upsampled, lateral]) if use_keras_layer
                          else upsampled + lateral)
            else:
                merged = (tf_keras.layers.Concatenate(axis=-1)([upsampled, lateral])
                          if use_keras_layer else tf.concat([upsampled, lateral], axis=-1))
            feats[str(level)] = apply_block(level, merged)

        for level in range(min_level, backbone_max_level + 1):
            feats[str(level)] = conv2d(filters=num_filters, strides=1, kernel_size=3,
                                       name=f"post_hoc_{level}", **conv_args)(feats[str(level)])

        activation_fn = tf_utils.get_activation(activation, use_keras_layer=True)
        for level in range(backbone_max_level + 1, max_level + 1):
            feats_in = feats[str(level - 1)]
            if level > backbone_max_level + 1:
                feats_in = activation_fn(feats_in)
            feats[str(level)] = conv2d(filters=num_filters, strides=2, kernel_size=3,
                                       name=f"coarser_{level}", **conv_args)(feats_in)

        for level in range(min_level, max_level + 1):
            feats[str(level)] = norm_layer(f"norm_{level}")(feats[str(level)])

        self._output_specs = {str(level): feats[str(level)].get_shape()
                              for level in range(min_level, max_level + 1)}
        # Skip FPN.__init__ (it would build the graph without the blocks) and
        # initialise FPN's base, which tf_keras turns into a Functional model
        # (it rewrites the bases of the class on first use).
        super(fpn.FPN, self).__init__(inputs=inputs, outputs=feats, **kwargs)

    @property
    def blocks(self) -> dict[int, tf_keras.layers.Layer]:
        """The (E)NL block layers, keyed by level."""
        block = self._config_dict["block"]
        return {level: self.get_layer(f"{block}_{level}")
                for level in self._config_dict["block_levels"]}

    def get_config(self) -> Mapping[str, Any]:
        config = dict(self._config_dict)
        config["block_levels"] = list(config["block_levels"])
        if config["dct_size"] is not None:
            config["dct_size"] = list(config["dct_size"])
        return config


@factory.register_decoder_builder("enl_fpn")
def build_enl_fpn_decoder(
    input_specs: Mapping[str, tf.TensorShape],
    model_config: hyperparams.Config,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
) -> tf_keras.Model:
    """Builds an ``ENLFPN`` from a model config whose decoder type is ``enl_fpn``.

    Raises:
        ValueError: if the decoder type is not ``enl_fpn``, or a field is
            invalid (the message names it).
    """
    decoder_type = model_config.decoder.type
    if decoder_type != "enl_fpn":
        raise ValueError(f"Inconsistent decoder type {decoder_type!r}; need 'enl_fpn'.")
    decoder_cfg = model_config.decoder.get()
    norm_activation_config = model_config.norm_activation
    block_levels = list(decoder_cfg.block_levels)
    if decoder_cfg.levels is not None and block_levels == list(DEFAULT_BLOCK_LEVELS):
        block_levels = None  # only the deprecated `levels` was set: it decides
    return ENLFPN(
        input_specs=input_specs,
        min_level=model_config.min_level,
        max_level=model_config.max_level,
        num_filters=decoder_cfg.num_filters,
        fusion_type=decoder_cfg.fusion_type,
        use_separable_conv=decoder_cfg.use_separable_conv,
        use_keras_layer=decoder_cfg.use_keras_layer,
        **norm_activation_kwargs(norm_activation_config, l2_regularizer),
        block_levels=block_levels,
        levels=decoder_cfg.levels,
        block=decoder_cfg.block,
        inter_channels=decoder_cfg.inter_channels,
        dct_size=decoder_cfg.dct_size,
        position_encoding=decoder_cfg.position_encoding,
        block_input_norm=decoder_cfg.block_input_norm,
        block_norm=decoder_cfg.block_norm)
