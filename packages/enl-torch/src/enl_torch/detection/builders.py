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
block's branch sees a normalised input, batch or layer norm by ``block_norm``,
mirroring the Model Garden decoder options of the same names; its norm keys
``backbone.fpn.top_down_blocks.<i>.norm.*`` are new keys like the blocks', so a
plain checkpoint still loads).

The detector's sizes are torchvision's unless given: ``anchor_sizes`` (one per
feature map) and ``aspect_ratios``, ``box_head_fc_dims`` and (Mask R-CNN)
``mask_head_channels`` build those parts with :mod:`enl_torch.detection.heads`;
scalars such as ``rpn_post_nms_top_n_train``, ``box_batch_size_per_image`` or
``box_detections_per_img`` go through ``**kwargs`` to torchvision as ever.
The main job sets them all to mirror Model Garden's
``enl_experiments/configs/beach_common.yaml``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import misc as misc_nn_ops

from enl_core import variants as core_variants
from enl_core.validation import bounded_int
from enl_torch.detection import heads
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

# The variants are the framework-neutral table of enl_core.variants.
VARIANTS = {key: {"bottom_up_nonlocal": variant.bottom_up_nonlocal,
                  "fpn_block": variant.fpn_block}
            for key, variant in core_variants.VARIANTS.items()}
VARIANT_LABELS = {key: variant.label for key, variant in core_variants.VARIANTS.items()}
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


def _named_parameters(function) -> set[str]:
    return {name for name, parameter in inspect.signature(function).parameters.items()
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)}


def detector_kwarg_names(model_cls) -> set[str]:
    """The keyword arguments ``model_cls`` (``FasterRCNN`` / ``MaskRCNN``) really
    uses beyond ``backbone`` and ``num_classes``: its own and those of the
    ``GeneralizedRCNNTransform`` its ``**kwargs`` go to."""
    # ``_skip_resize`` is the one key the transform reads from its own **kwargs.
    return ((_named_parameters(model_cls.__init__)
             | _named_parameters(GeneralizedRCNNTransform.__init__) | {"_skip_resize"})
            - {"self", "backbone", "num_classes"})


def _check_detector_kwargs(model_cls, kwargs: Mapping[str, Any]) -> None:
    """Refuses what ``model_cls`` would swallow: torchvision hands unknown keyword
    arguments on to ``GeneralizedRCNNTransform``, which ignores them, so a typo
    (``box_detections_per_imgs``) would silently train with the default."""
    valid = detector_kwarg_names(model_cls)
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise TypeError(f"unknown keyword argument(s) {unknown} for {model_cls.__name__} "
                        f"(received {({k: kwargs[k] for k in unknown})!r}); the valid ones "
                        f"are {sorted(valid)}")


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
           block_kwargs: Mapping[str, Any] | None, block_input_norm: bool, block_norm: str,
           fpn_channels: int,
           norm_layer: Callable[..., nn.Module] | None,
           anchor_sizes: Sequence[float] | None, aspect_ratios: Sequence[float] | None,
           box_head_fc_dims: Sequence[int] | None, mask_head_channels: Sequence[int] | None,
           kwargs: dict[str, Any]):
    if backbone_name not in BACKBONES:
        raise ValueError(f"`backbone_name` must be one of {sorted(BACKBONES)}, "
                         f"received {backbone_name!r}")
    if num_classes is not None:
        # Classes including background: a detector needs at least one object class.
        num_classes = bounded_int("num_classes", num_classes, minimum=2)
    _check_detector_kwargs(model_cls, kwargs)
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
        block_norm=block_norm, fpn_channels=fpn_channels, backbone_state_dict=backbone_state)
    sized = _sized_parts(model_cls, backbone, num_classes, anchor_sizes, aspect_ratios,
                         box_head_fc_dims, mask_head_channels, kwargs)
    if "box_predictor" in sized and "box_predictor" not in kwargs:
        num_classes = None  # torchvision's rule: the predictors built here carry the classes
    model = model_cls(backbone, num_classes=num_classes, **sized)
    if state is not None:
        load_allowing_new_blocks(model, state, NEW_BLOCK_PREFIXES, "weights")
    return model


def _conflict(name: str, value: Any, kwargs: dict[str, Any], keys: Sequence[str]) -> None:
    given = [key for key in keys if kwargs.get(key) is not None]
    if value is not None and given:
        raise ValueError(f"`{name}`={value!r} builds what {given} already give; pass one or "
                         f"the other")


def _sized_parts(model_cls, backbone: nn.Module, num_classes: int,
                 anchor_sizes: Sequence[float] | None, aspect_ratios: Sequence[float] | None,
                 box_head_fc_dims: Sequence[int] | None, mask_head_channels: Sequence[int] | None,
                 kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` plus the anchor generator and heads the sizes ask for."""
    kwargs = dict(kwargs)
    anchors = None if anchor_sizes is None and aspect_ratios is None else (anchor_sizes,
                                                                           aspect_ratios)
    _conflict("anchor_sizes/aspect_ratios", anchors, kwargs, ("rpn_anchor_generator",))
    _conflict("box_head_fc_dims", box_head_fc_dims, kwargs, ("box_head", "box_predictor"))
    _conflict("mask_head_channels", mask_head_channels, kwargs, ("mask_head", "mask_predictor"))
    if mask_head_channels is not None and not issubclass(model_cls, MaskRCNN):
        raise ValueError(f"`mask_head_channels` is for Mask R-CNN, received "
                         f"{mask_head_channels!r} for {model_cls.__name__}")
    if anchors is not None:
        kwargs["rpn_anchor_generator"] = heads.anchor_generator(
            anchor_sizes, aspect_ratios, heads.count_feature_maps(backbone))
    if box_head_fc_dims is None and mask_head_channels is None:
        return kwargs
    # torchvision takes a head of another width only with its predictor, and
    # then wants num_classes None: build both predictors here.
    representation = heads.TORCHVISION_REPRESENTATION_SIZE
    if box_head_fc_dims is not None:
        kwargs["box_head"] = heads.box_head(backbone.out_channels, box_head_fc_dims)
        representation = box_head_fc_dims[-1]
    kwargs["box_predictor"] = heads.box_predictor(representation, num_classes)
    if issubclass(model_cls, MaskRCNN):
        mask_width = heads.TORCHVISION_MASK_CHANNELS
        if mask_head_channels is not None:
            kwargs["mask_head"] = heads.mask_head(backbone.out_channels, mask_head_channels)
            mask_width = mask_head_channels[-1]
        kwargs["mask_predictor"] = heads.mask_predictor(mask_width, num_classes)
    return kwargs


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
    block_norm: str = "batch",
    fpn_channels: int = FPN_OUT_CHANNELS,
    norm_layer: Callable[..., nn.Module] | None = None,
    anchor_sizes: Sequence[float] | None = None,
    aspect_ratios: Sequence[float] | None = None,
    box_head_fc_dims: Sequence[int] | None = None,
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
        block_input_norm: TD variants: each block's branch sees a normalised
            input, ``x + block(n) - n``, ``n = norm(x)`` (Model Garden's ``block_input_norm``;
            it kept +3ENL TD from diverging when trained from scratch). Default
            False, the paper's placement; no effect on ``baseline`` / ``1nl_bu``.
        block_norm: the norm of ``block_input_norm``: ``"batch"`` (default) or
            ``"layer"`` (a layer norm over channels, no running statistics).
        fpn_channels: FPN width; default 256 (torchvision's).
        norm_layer: backbone norm; default ``FrozenBatchNorm2d`` with pretrained
            weights, else ``BatchNorm2d`` (torchvision's rule).
        anchor_sizes: one anchor size in pixels per feature map (P2..P5 and the
            extra ``"pool"`` level P6, so 5); default torchvision's
            (32, 64, 128, 256, 512). The main job's (8, 16, 32, 64, 128) is Model
            Garden's ``anchor_size: 2.0`` (2 x stride).
        aspect_ratios: anchor height/width ratios on every map; default
            (0.5, 1.0, 2.0) (torchvision's and Garden's).
        box_head_fc_dims: widths of the box head's FC layers (torchvision's
            ``FastRCNNConvFCHead`` without convs), e.g. ``(256,)`` as Garden's
            ``num_fcs: 1, fc_dims: 256``; default None: torchvision's
            ``TwoMLPHead`` of width 1024.
        **kwargs: passed to ``torchvision.models.detection.FasterRCNN`` (e.g.
            ``min_size``, ``max_size``, ``rpn_pre_nms_top_n_train``,
            ``rpn_post_nms_top_n_test``, ``box_batch_size_per_image``,
            ``box_detections_per_img``). ``rpn_anchor_generator`` / ``box_head``
            / ``box_predictor`` exclude the size arguments that build them.

    Returns:
        A ``torchvision.models.detection.FasterRCNN``.

    Raises:
        ValueError / TypeError / FileNotFoundError: naming the bad argument
            (``num_classes`` must be an int >= 2, background included; a keyword
            argument that ``FasterRCNN`` and its transform do not take is
            refused with the list of the valid ones).

    Example::

        model = fasterrcnn_enl_resnet_fpn(backbone_name="resnet101", num_classes=3,
                                          min_size=256, max_size=256).eval()
        detections = model([torch.rand(3, 256, 256)])
    """
    return _build(FasterRCNN, backbone_name=backbone_name, variant=variant, weights=weights,
                  num_classes=num_classes, weights_backbone=weights_backbone,
                  trainable_backbone_layers=trainable_backbone_layers,
                  block_levels=block_levels, block_kwargs=block_kwargs,
                  block_input_norm=block_input_norm, block_norm=block_norm,
                  fpn_channels=fpn_channels,
                  norm_layer=norm_layer, anchor_sizes=anchor_sizes,
                  aspect_ratios=aspect_ratios, box_head_fc_dims=box_head_fc_dims,
                  # torchvision passes unknown kwargs on to its transform, which
                  # ignores them: take this one out so it is refused by name.
                  mask_head_channels=kwargs.pop("mask_head_channels", None), kwargs=kwargs)


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
    block_norm: str = "batch",
    fpn_channels: int = FPN_OUT_CHANNELS,
    norm_layer: Callable[..., nn.Module] | None = None,
    anchor_sizes: Sequence[float] | None = None,
    aspect_ratios: Sequence[float] | None = None,
    box_head_fc_dims: Sequence[int] | None = None,
    mask_head_channels: Sequence[int] | None = None,
    **kwargs: Any,
) -> MaskRCNN:
    """Mask R-CNN with a ResNet / ResNeXt FPN and the paper's (E)NL blocks.

    Same arguments as :func:`fasterrcnn_enl_resnet_fpn`; ``**kwargs`` go to
    ``torchvision.models.detection.MaskRCNN``. Levi & Ullman, BMVC 2019, Sec. 4.

    Args:
        mask_head_channels: channels of the mask head's 3x3 convs (torchvision's
            ``MaskRCNNHeads``; the predictor's deconvolution gets the last one),
            e.g. ``(64, 64)`` as Garden's ``num_convs: 2, num_filters: 64``;
            default None: torchvision's ``(256,) * 4``. Excludes ``mask_head`` /
            ``mask_predictor`` in ``**kwargs``.

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
                  block_input_norm=block_input_norm, block_norm=block_norm,
                  fpn_channels=fpn_channels,
                  norm_layer=norm_layer, anchor_sizes=anchor_sizes,
                  aspect_ratios=aspect_ratios, box_head_fc_dims=box_head_fc_dims,
                  mask_head_channels=mask_head_channels, kwargs=kwargs)


MODEL_BUILDERS = {
    "fasterrcnn_enl_resnet_fpn": fasterrcnn_enl_resnet_fpn,
    "maskrcnn_enl_resnet_fpn": maskrcnn_enl_resnet_fpn,
}
MODEL_CLASSES = {"fasterrcnn_enl_resnet_fpn": FasterRCNN, "maskrcnn_enl_resnet_fpn": MaskRCNN}


def builder_kwarg_names(name: str) -> set[str]:
    """Every keyword argument ``MODEL_BUILDERS[name]`` takes: its own and the
    detector's (:func:`detector_kwarg_names`)."""
    own = _named_parameters(MODEL_BUILDERS[name])
    return own | detector_kwarg_names(MODEL_CLASSES[name])
