"""Faster / Mask R-CNN builders for the paper's detectors, torchvision style.

``fasterrcnn_enl_resnet_fpn`` and ``maskrcnn_enl_resnet_fpn`` mirror
``torchvision.models.detection.{fasterrcnn,maskrcnn}_resnet50_fpn`` (same
keyword arguments, ``**kwargs`` go to ``FasterRCNN`` / ``MaskRCNN``), with a
``backbone_name`` (the R50 / R101 / X101 rows of Levi & Ullman 2019, Tables
1-3) and a ``variant``:

=============  ===========  ===============================================
``variant``    paper label  what is added to the torchvision detector
=============  ===========  ===============================================
``baseline``   baseline     nothing (torchvision's FPN)
``1nl_bu``     +1NL BU      one embedded-Gaussian NL before the last block of res4
``3enl_td``    +3ENL TD     ENL on the FPN top-down stream at P5, P4, P3
``3nl_td``     +3NL TD      embedded-Gaussian NL at P5, P4, P3 (cost table)
=============  ===========  ===============================================

Nothing is downloaded: ``weights`` / ``weights_backbone`` are None or local
files (or state dicts).

Two options beyond the paper, for the CPU-sized main job: ``fpn_channels``
(the FPN width, torchvision's 256 by default) and ``block_input_norm`` (each FPN
block's branch sees a batch-normalised input, mirroring the Model Garden
decoder option of the same name; its norm keys
``backbone.fpn.top_down_blocks.<i>.norm.*`` are new keys like the blocks', so a
plain checkpoint still loads).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.ops import misc as misc_nn_ops

from enl_torch.detection.backbones import (
    BACKBONES,
    BOTTOM_UP_NAME,
    BOTTOM_UP_STAGE,
    FPN_OUT_CHANNELS,
    resnet_enl_fpn_backbone,
)
from enl_torch.detection.fpn import DEFAULT_BLOCK_LEVELS
from enl_torch.detection.weights import (
    WeightsLike,
    load_allowing_new_blocks,
    load_state_dict_file,
)

VARIANTS = {
    "baseline": {"bottom_up_nonlocal": False, "fpn_block": None},
    "1nl_bu": {"bottom_up_nonlocal": True, "fpn_block": None},
    "3enl_td": {"bottom_up_nonlocal": False, "fpn_block": "enl"},
    "3nl_td": {"bottom_up_nonlocal": False, "fpn_block": "nl"},
}
VARIANT_LABELS = {"baseline": "baseline", "1nl_bu": "+1NL BU", "3enl_td": "+3ENL TD",
                  "3nl_td": "+3NL TD"}
# Keys of the blocks a variant adds: the only keys a plain checkpoint may lack.
NEW_BLOCK_PREFIXES = (f"backbone.body.{BOTTOM_UP_STAGE}.{BOTTOM_UP_NAME}.",
                      "backbone.fpn.top_down_blocks.")
CLASSIFIER_KEY = "roi_heads.box_predictor.cls_score.weight"


def _variant(variant: str) -> dict[str, Any]:
    by_label = {label: name for name, label in VARIANT_LABELS.items()}
    name = by_label.get(variant, variant)
    if name not in VARIANTS:
        raise ValueError(f"`variant` must be one of {sorted(VARIANTS)} (or a paper label "
                         f"{sorted(by_label)}), received {variant!r}")
    return VARIANTS[name]


def _trainable_layers(value: int | None, pretrained: bool) -> int:
    if value is None:
        return 3 if pretrained else 5  # torchvision's defaults
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 5:
        raise ValueError(f"`trainable_backbone_layers` must be an int in [0, 5] or None, "
                         f"received {value!r}")
    return value


def _build(model_cls, *, backbone_name: str, variant: str, weights: WeightsLike,
           num_classes: int | None, weights_backbone: WeightsLike,
           trainable_backbone_layers: int | None, block_levels: Sequence[int],
           block_kwargs: Mapping[str, Any] | None, block_input_norm: bool, fpn_channels: int,
           norm_layer: Callable[..., nn.Module] | None, kwargs: dict[str, Any]):
    if backbone_name not in BACKBONES:
        raise ValueError(f"`backbone_name` must be one of {sorted(BACKBONES)}, "
                         f"received {backbone_name!r}")
    spec = _variant(variant)
    state = load_state_dict_file(weights, "weights")
    backbone_state = None if state is not None else load_state_dict_file(
        weights_backbone, "weights_backbone")
    if state is not None:
        inferred = state[CLASSIFIER_KEY].shape[0] if CLASSIFIER_KEY in state else None
        if num_classes is None:
            num_classes = inferred
        elif inferred is not None and inferred != num_classes:
            raise ValueError(f"`num_classes`={num_classes} does not match `weights`, which "
                             f"have {inferred} classes")
    if num_classes is None:
        num_classes = 91  # COCO with torchvision's category ids, as torchvision
    pretrained = state is not None or backbone_state is not None
    if norm_layer is None:
        # torchvision freezes BN statistics when starting from trained weights.
        norm_layer = misc_nn_ops.FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    backbone = resnet_enl_fpn_backbone(
        backbone_name=backbone_name, norm_layer=norm_layer,
        trainable_layers=_trainable_layers(trainable_backbone_layers, pretrained),
        bottom_up_nonlocal=spec["bottom_up_nonlocal"], fpn_block=spec["fpn_block"],
        block_levels=block_levels, block_kwargs=block_kwargs, block_input_norm=block_input_norm,
        fpn_channels=fpn_channels, backbone_state_dict=backbone_state)
    model = model_cls(backbone, num_classes=num_classes, **kwargs)
    if state is not None:
        load_allowing_new_blocks(model, state, NEW_BLOCK_PREFIXES, "weights")
    return model


def fasterrcnn_enl_resnet_fpn(
    *,
    backbone_name: str = "resnet50",
    variant: str = "3enl_td",
    weights: WeightsLike = None,
    num_classes: int | None = None,
    weights_backbone: WeightsLike = None,
    trainable_backbone_layers: int | None = None,
    block_levels: Sequence[int] = DEFAULT_BLOCK_LEVELS,
    block_kwargs: Mapping[str, Any] | None = None,
    block_input_norm: bool = False,
    fpn_channels: int = FPN_OUT_CHANNELS,
    norm_layer: Callable[..., nn.Module] | None = None,
    **kwargs: Any,
) -> FasterRCNN:
    """Faster R-CNN with a ResNet / ResNeXt FPN and the paper's (E)NL blocks.

    Levi & Ullman, "Efficient Coarse-to-Fine Non-Local Module for the Detection
    of Small Objects", BMVC 2019, Sec. 4.

    Args:
        backbone_name: ``"resnet50"`` (default), ``"resnet101"``,
            ``"resnext101_32x8d"`` (the paper's), or ``"resnet18"`` / ``"resnet34"``
            (BasicBlock, for CPU-sized runs).
        variant: ``"baseline"``, ``"1nl_bu"``, ``"3enl_td"`` (default) or
            ``"3nl_td"`` (or the paper labels ``"+3ENL TD"`` ...).
        weights: the whole detector: a local ``torch.save`` file or a state dict
            (a torchvision COCO checkpoint loads into every variant: only the
            added, identity-initialised blocks are then missing). ``num_classes``
            is read from it when not given.
        num_classes: classes including background; default 91 (torchvision's COCO ids).
        weights_backbone: ImageNet weights of the plain ResNet, a file or state dict.
        trainable_backbone_layers: 0-5; default 3 with pretrained weights, else 5.
            Unlike torchvision, honoured without pretrained weights too.
        block_levels: FPN levels with a block (TD variants); default (5, 4, 3).
        block_kwargs: keyword arguments for the FPN blocks (``ENL`` / ``NonLocal``).
        block_input_norm: TD variants: each block's branch sees a batch-normalised
            input, ``x + block(BN(x)) - BN(x)`` (Model Garden's ``block_input_norm``;
            it kept +3ENL TD from diverging when trained from scratch). Default
            False, the paper's placement; no effect on ``baseline`` / ``1nl_bu``.
        fpn_channels: FPN width; default 256 (torchvision's).
        norm_layer: backbone norm; default ``FrozenBatchNorm2d`` with pretrained
            weights, else ``BatchNorm2d`` (torchvision's rule).
        **kwargs: passed to ``torchvision.models.detection.FasterRCNN`` (e.g.
            ``min_size``, ``max_size``, ``rpn_post_nms_top_n_train``).

    Returns:
        A ``torchvision.models.detection.FasterRCNN``.

    Raises:
        ValueError / TypeError / FileNotFoundError: naming the bad argument.

    Example::

        model = fasterrcnn_enl_resnet_fpn(backbone_name="resnet101", num_classes=3,
                                          min_size=256, max_size=256).eval()
        detections = model([torch.rand(3, 256, 256)])
    """
    return _build(FasterRCNN, backbone_name=backbone_name, variant=variant, weights=weights,
                  num_classes=num_classes, weights_backbone=weights_backbone,
                  trainable_backbone_layers=trainable_backbone_layers,
                  block_levels=block_levels, block_kwargs=block_kwargs,
                  block_input_norm=block_input_norm, fpn_channels=fpn_channels,
                  norm_layer=norm_layer, kwargs=kwargs)


def maskrcnn_enl_resnet_fpn(
    *,
    backbone_name: str = "resnet50",
    variant: str = "3enl_td",
    weights: WeightsLike = None,
    num_classes: int | None = None,
    weights_backbone: WeightsLike = None,
    trainable_backbone_layers: int | None = None,
    block_levels: Sequence[int] = DEFAULT_BLOCK_LEVELS,
    block_kwargs: Mapping[str, Any] | None = None,
    block_input_norm: bool = False,
    fpn_channels: int = FPN_OUT_CHANNELS,
    norm_layer: Callable[..., nn.Module] | None = None,
    **kwargs: Any,
) -> MaskRCNN:
    """Mask R-CNN with a ResNet / ResNeXt FPN and the paper's (E)NL blocks.

    Same arguments as :func:`fasterrcnn_enl_resnet_fpn`; ``**kwargs`` go to
    ``torchvision.models.detection.MaskRCNN``. Levi & Ullman, BMVC 2019, Sec. 4.

    Returns:
        A ``torchvision.models.detection.MaskRCNN``.

    Example::

        model = maskrcnn_enl_resnet_fpn(variant="+3ENL TD", num_classes=3,
                                        min_size=256, max_size=256).eval()
        detections = model([torch.rand(3, 256, 256)])   # boxes, labels, scores, masks
    """
    return _build(MaskRCNN, backbone_name=backbone_name, variant=variant, weights=weights,
                  num_classes=num_classes, weights_backbone=weights_backbone,
                  trainable_backbone_layers=trainable_backbone_layers,
                  block_levels=block_levels, block_kwargs=block_kwargs,
                  block_input_norm=block_input_norm, fpn_channels=fpn_channels,
                  norm_layer=norm_layer, kwargs=kwargs)


MODEL_BUILDERS = {
    "fasterrcnn_enl_resnet_fpn": fasterrcnn_enl_resnet_fpn,
    "maskrcnn_enl_resnet_fpn": maskrcnn_enl_resnet_fpn,
}
