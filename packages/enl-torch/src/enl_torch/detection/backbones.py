"""ResNet / ResNeXt + FPN backbones with the paper's non-local placements.

Two placements (Levi & Ullman 2019, Table 1 and 2):

* bottom-up, "+1NL BU": one embedded-Gaussian NL block right before the last
  residual block of res4 (torchvision's ``layer3``), as Wang et al. (CVPR 2018)
  place it for Mask R-CNN;
* top-down, "+3ENL TD" / "+3NL TD": blocks on the FPN top-down stream at P5,
  P4, P3 (:class:`~enl_torch.detection.fpn.ENLFeaturePyramidNetwork`).

The bottom-up block is inserted into ``layer3`` under the name ``non_local``,
so the residual blocks keep their torchvision names (``layer3.5.conv1...``)
and an ImageNet ResNet checkpoint loads unchanged.

Besides the paper's backbones (ResNet-50 and up, Bottleneck blocks), the
table has torchvision's ResNet-18 / 34 (BasicBlock), so that a CPU-sized
detector can match the Model Garden configs of the main job (ResNet-18, 64
FPN channels; ``fpn_channels`` sets the FPN width). Garden's
``depth_multiplier`` (a narrower ResNet) has no torchvision equivalent:
torchvision's ResNet hard-codes its stage widths 64..512 and BasicBlock
refuses ``width_per_group``, so it is not mirrored here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn
from torchvision.models import resnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from enl_torch.detection.fpn import (
    DEFAULT_BLOCK_LEVELS,
    BlockFactory,
    ENLFeaturePyramidNetwork,
    block_factory,
    check_block_input_norm,
)

# The paper's backbones (R50, R101, X101 rows) and their torchvision constructors,
# plus the BasicBlock ResNets for CPU-sized runs (the main job's garden configs use R18).
BACKBONES = {
    "resnet18": resnet.resnet18,
    "resnet34": resnet.resnet34,
    "resnet50": resnet.resnet50,
    "resnet101": resnet.resnet101,
    "resnext101_32x8d": resnet.resnext101_32x8d,
}
BOTTOM_UP_STAGE = "layer3"  # res4: stride 16, 1024 channels (256 with BasicBlock)
BOTTOM_UP_NAME = "non_local"
FPN_OUT_CHANNELS = 256  # torchvision's FPN width, the default of ``fpn_channels``


def insert_before_last_block(stage: nn.Sequential, block: nn.Module,
                             name: str = BOTTOM_UP_NAME) -> nn.Sequential:
    """A copy of ``stage`` with ``block`` inserted before its last residual block.

    The residual blocks keep their names, so checkpoints of the plain stage load.

    Raises:
        TypeError: ``stage`` is not an ``nn.Sequential``.
        ValueError: ``stage`` has fewer than two blocks, or ``name`` is taken.
    """
    if not isinstance(stage, nn.Sequential):
        raise TypeError(f"`stage` must be an nn.Sequential of residual blocks, "
                        f"received {type(stage).__name__}")
    named = list(stage.named_children())
    if len(named) < 2:
        raise ValueError(f"`stage` must have at least two residual blocks, received {len(named)}")
    if name in dict(named):
        raise ValueError(f"`name` {name!r} is already a child of the stage")
    return nn.Sequential(OrderedDict([*named[:-1], (name, block), named[-1]]))


def stage_out_channels(stage: nn.Sequential) -> int:
    """Output channels of a torchvision ResNet stage (its last block's last conv)."""
    last = stage[-1]
    for attribute in ("conv3", "conv2"):  # Bottleneck, BasicBlock
        if hasattr(last, attribute):
            return getattr(last, attribute).out_channels
    raise TypeError(f"cannot infer the channels of a stage ending in {type(last).__name__}")


def resnet_enl_fpn_backbone(
    *,
    backbone_name: str = "resnet50",
    norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
    trainable_layers: int = 5,
    bottom_up_nonlocal: bool = False,
    bottom_up_kwargs: Mapping[str, Any] | None = None,
    fpn_block: None | str | BlockFactory = None,
    block_levels: Sequence[int] = DEFAULT_BLOCK_LEVELS,
    block_kwargs: Mapping[str, Any] | None = None,
    block_input_norm: bool = False,
    block_norm: str = "batch",
    fpn_channels: int = FPN_OUT_CHANNELS,
    backbone_state_dict: Mapping[str, Any] | None = None,
) -> BackboneWithFPN:
    """ResNet-FPN backbone (torchvision's ``BackboneWithFPN``) with NL / ENL blocks.

    Args:
        backbone_name: ``"resnet18"``, ``"resnet34"``, ``"resnet50"``,
            ``"resnet101"`` or ``"resnext101_32x8d"``.
        norm_layer: the backbone's norm (``FrozenBatchNorm2d`` for pretrained weights).
        trainable_layers: residual stages left trainable counting from ``layer4``
            (0-5, torchvision's meaning). Added blocks are always trainable.
        bottom_up_nonlocal: "+1NL BU": an embedded-Gaussian
            :class:`enl_torch.NonLocal` before the last block of ``layer3``.
        bottom_up_kwargs: keyword arguments for that block.
        fpn_block: ``None`` (torchvision's plain FPN), ``"enl"``, ``"nl"`` or a
            factory, applied on the top-down stream at ``block_levels``.
        block_levels: FPN levels that get a block (C2..C5 are levels 2..5).
        block_kwargs: keyword arguments for a named ``fpn_block``.
        block_input_norm: each FPN block's branch sees a normalised input,
            ``x + block(n) - n`` with ``n = norm(x)`` (see
            :class:`~enl_torch.detection.fpn.ENLFeaturePyramidNetwork`); only
            with an ``fpn_block`` (it changes nothing without one).
        block_norm: that norm: ``"batch"`` or ``"layer"`` (a layer norm over
            channels, no running statistics).
        fpn_channels: FPN width (torchvision's is 256); the blocks run at it.
        backbone_state_dict: ImageNet weights of the plain ResNet (e.g. a
            torchvision ``resnet50`` checkpoint) loaded before the blocks are
            added; ``fc.*`` is ignored.

    Returns:
        A ``BackboneWithFPN`` (``body``, ``fpn``, ``out_channels = fpn_channels``)
        returning ``"0".."3"`` (P2..P5) and ``"pool"`` (P6).

    Raises:
        ValueError: unknown ``backbone_name``, bad ``trainable_layers``,
            ``fpn_channels`` or ``block_norm``, or a state dict that does not
            fit the ResNet.
        TypeError: ``block_input_norm`` is not a bool.
    """
    if backbone_name not in BACKBONES:
        raise ValueError(f"`backbone_name` must be one of {sorted(BACKBONES)}, "
                         f"received {backbone_name!r}")
    if isinstance(trainable_layers, bool) or not isinstance(trainable_layers, int) or not (
            0 <= trainable_layers <= 5):
        raise ValueError(f"`trainable_layers` must be an int in [0, 5], received "
                         f"{trainable_layers!r}")
    if isinstance(fpn_channels, bool) or not isinstance(fpn_channels, int) or fpn_channels < 1:
        raise ValueError(f"`fpn_channels` must be a positive int, received {fpn_channels!r}")
    check_block_input_norm(block_input_norm, block_norm)
    body = BACKBONES[backbone_name](weights=None, norm_layer=norm_layer)
    if backbone_state_dict is not None:
        _load_imagenet_weights(body, backbone_state_dict, backbone_name)
    # Freeze first (torchvision's rule), then add the new blocks: they must train.
    backbone = _resnet_fpn_extractor(body, trainable_layers)
    if bottom_up_nonlocal:
        stage = getattr(backbone.body, BOTTOM_UP_STAGE)
        kwargs = dict(bottom_up_kwargs or {})
        make_block = block_factory("nl", kwargs)
        setattr(backbone.body, BOTTOM_UP_STAGE,
                insert_before_last_block(stage, make_block(stage_out_channels(stage))))
    # torchvision's extractor always builds a 256-channel plain FPN; replace it
    # when the width or the blocks differ (same inputs, same extra block).
    in_channels_list = [inner[0].in_channels for inner in backbone.fpn.inner_blocks]
    if fpn_block is not None:
        backbone.fpn = ENLFeaturePyramidNetwork(
            in_channels_list, fpn_channels, extra_blocks=LastLevelMaxPool(), levels=(2, 3, 4, 5),
            block_levels=block_levels, block=fpn_block, block_kwargs=block_kwargs,
            block_input_norm=block_input_norm, block_norm=block_norm)
    elif fpn_channels != FPN_OUT_CHANNELS:
        backbone.fpn = FeaturePyramidNetwork(in_channels_list, fpn_channels,
                                             extra_blocks=LastLevelMaxPool())
    backbone.out_channels = fpn_channels
    return backbone


def _load_imagenet_weights(body: nn.Module, state_dict: Mapping[str, Any], name: str) -> None:
    try:
        result = body.load_state_dict(dict(state_dict), strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"`weights_backbone` does not fit {name}: {error}") from error
    unexpected = [key for key in result.unexpected_keys if not key.startswith("fc.")]
    missing = [key for key in result.missing_keys
               if not key.startswith("fc.") and not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"`weights_backbone` does not fit {name}: missing {missing[:8]}, "
                         f"unexpected {unexpected[:8]} (expected a torchvision {name} "
                         f"state dict)")
