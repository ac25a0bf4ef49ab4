"""Anchors and RoI heads of a given size for the torchvision detectors.

torchvision's Faster / Mask R-CNN fix their anchors (32..512 px, one size per
feature map), a two-FC 1024-wide box head and a four-conv 256-channel mask
head: sized for COCO at 800 px. The CPU-sized main job mirrors Model Garden's
``enl_experiments/configs/beach_common.yaml`` instead (8 px anchors on P2, one
256-wide FC, two 64-channel mask convs); these functions build those parts
from plain numbers so the builders and ``python -m enl_torch.train`` can take
them as arguments. Every part is torchvision's own module
(``AnchorGenerator``, ``FastRCNNConvFCHead``, ``MaskRCNNHeads``, the
predictors), only sized differently. Levi & Ullman, BMVC 2019, Sec. 4 (the
detectors the (E)NL blocks are added to).
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

# torchvision's defaults (faster_rcnn._default_anchorgen, FasterRCNN, MaskRCNN).
TORCHVISION_ANCHOR_SIZES = (32, 64, 128, 256, 512)
TORCHVISION_ASPECT_RATIOS = (0.5, 1.0, 2.0)
TORCHVISION_REPRESENTATION_SIZE = 1024  # TwoMLPHead's width
TORCHVISION_MASK_CHANNELS = 256  # MaskRCNNHeads' (256,) * 4 and the predictor's width
BOX_ROI_SIZE = 7  # MultiScaleRoIAlign output of torchvision's box branch


def _positive_numbers(name: str, values, kind: type = Real) -> tuple:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"`{name}` must be a non-empty sequence of positive numbers, "
                         f"received {values!r}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
            what = "ints" if kind is int else "numbers"
            raise ValueError(f"`{name}` must hold positive {what}, received {values!r}")
    return tuple(values)


def anchor_generator(anchor_sizes: Sequence[float] | None, aspect_ratios: Sequence[float] | None,
                     num_feature_maps: int) -> AnchorGenerator:
    """An ``AnchorGenerator`` with one anchor size per feature map.

    Args:
        anchor_sizes: one size in pixels per feature map, finest first (for the
            ResNet-FPN: P2, P3, P4, P5 and torchvision's extra ``"pool"`` level,
            P6); None: torchvision's (32, 64, 128, 256, 512). Model Garden's
            ``anchor_size: 2.0`` with one scale is ``2 * stride``: 8, 16, 32, 64
            (and 128 for the pool level, which Garden's ``max_level: 5`` lacks).
        aspect_ratios: height / width ratios used on every map; None:
            torchvision's (0.5, 1.0, 2.0), which is also Garden's default.
        num_feature_maps: how many maps the backbone returns.

    Returns:
        ``AnchorGenerator(((s0,), (s1,), ...), (ratios,) * num_feature_maps)``.

    Raises:
        ValueError: a size or ratio that is not a positive number, or a number
            of sizes other than ``num_feature_maps``.

    Example::

        generator = anchor_generator((8, 16, 32, 64, 128), None, num_feature_maps=5)
        generator.num_anchors_per_location()   # [3, 3, 3, 3, 3]
    """
    sizes = TORCHVISION_ANCHOR_SIZES if anchor_sizes is None else _positive_numbers(
        "anchor_sizes", anchor_sizes)
    ratios = TORCHVISION_ASPECT_RATIOS if aspect_ratios is None else _positive_numbers(
        "aspect_ratios", aspect_ratios)
    if len(sizes) != num_feature_maps:
        raise ValueError(f"`anchor_sizes` needs one size per feature map: the backbone returns "
                         f"{num_feature_maps} maps (for the ResNet-FPN P2..P5 and the extra "
                         f"'pool' level P6), received {len(sizes)} sizes {tuple(sizes)}")
    return AnchorGenerator(tuple((size,) for size in sizes),
                           (tuple(float(r) for r in ratios),) * num_feature_maps)


def box_head(in_channels: int, fc_dims: Sequence[int]) -> FastRCNNConvFCHead:
    """A box head of fully connected layers (each followed by ReLU) on 7x7 RoI features.

    torchvision's ``FastRCNNConvFCHead`` with no convolutions: ``fc_dims=(256,)``
    is Model Garden's ``num_convs: 0, num_fcs: 1, fc_dims: 256`` (Garden also
    batch-normalises each FC; torchvision's heads have no norm, so neither does
    this one). torchvision's default ``TwoMLPHead`` is ``fc_dims=(1024, 1024)``.

    Args:
        in_channels: channels of the RoI features (the FPN width).
        fc_dims: widths of the FC layers, in order.

    Returns:
        The head; its output width is ``fc_dims[-1]``.

    Raises:
        ValueError: ``fc_dims`` is not a non-empty sequence of positive ints.
    """
    dims = _positive_numbers("box_head_fc_dims", fc_dims, int)
    return FastRCNNConvFCHead((in_channels, BOX_ROI_SIZE, BOX_ROI_SIZE), [], list(dims))


def box_predictor(representation_size: int, num_classes: int) -> FastRCNNPredictor:
    """torchvision's class-score and box-delta layers on a head of that width."""
    return FastRCNNPredictor(representation_size, num_classes)


def mask_head(in_channels: int, channels: Sequence[int]) -> MaskRCNNHeads:
    """torchvision's mask head (3x3 conv + ReLU per entry of ``channels``).

    ``channels=(64, 64)`` is Model Garden's ``mask_head: {num_convs: 2,
    num_filters: 64}``; torchvision's default is ``(256,) * 4``.

    Raises:
        ValueError: ``channels`` is not a non-empty sequence of positive ints.
    """
    layers = _positive_numbers("mask_head_channels", channels, int)
    return MaskRCNNHeads(in_channels, list(layers), dilation=1)


def mask_predictor(in_channels: int, num_classes: int) -> MaskRCNNPredictor:
    """torchvision's 2x deconvolution + per-class 1x1 logits, at the head's width
    (as Garden's mask head, whose deconvolution has ``num_filters`` channels)."""
    return MaskRCNNPredictor(in_channels, in_channels, num_classes)


def count_feature_maps(backbone: nn.Module) -> int:
    """Feature maps a torchvision ``BackboneWithFPN`` returns (levels + extra blocks).

    Raises:
        TypeError: the backbone has no torchvision FPN (``backbone.fpn``).
    """
    fpn = getattr(backbone, "fpn", None)
    if fpn is None or not hasattr(fpn, "inner_blocks"):
        raise TypeError(f"cannot count the feature maps of a {type(backbone).__name__} "
                        f"without a torchvision FPN")
    extra = getattr(fpn, "extra_blocks", None)
    # LastLevelMaxPool adds one map ("pool"); LastLevelP6P7 adds two.
    added = 0 if extra is None else {"LastLevelMaxPool": 1, "LastLevelP6P7": 2}.get(
        type(extra).__name__)
    if added is None:
        raise TypeError(f"cannot count the maps added by FPN extra block {type(extra).__name__}")
    return len(fpn.inner_blocks) + added
