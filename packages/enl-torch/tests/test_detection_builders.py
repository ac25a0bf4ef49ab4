"""The paper's detectors: every backbone x variant builds, costs what enl_core
predicts, runs in eval, and loads local weights (no downloads)."""

from __future__ import annotations

import inspect
import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.ops import FeaturePyramidNetwork, box_iou
from torchvision.ops.misc import FrozenBatchNorm2d

import enl_torch
from enl_core.cost import block_params
from enl_torch.detection import (
    BACKBONES,
    VARIANTS,
    ENLFeaturePyramidNetwork,
    fasterrcnn_enl_resnet_fpn,
    heads,
    maskrcnn_enl_resnet_fpn,
)
from enl_torch.detection.builders import builder_kwarg_names, detector_kwarg_names
from enl_torch.detection.fpn import NormalizedInputBlock

BUILDERS = {"faster": (fasterrcnn_enl_resnet_fpn, FasterRCNN),
            "mask": (maskrcnn_enl_resnet_fpn, MaskRCNN)}
# Small inputs and few proposals keep a CPU forward around a second.
SMALL = {"min_size": 64, "max_size": 64, "rpn_pre_nms_top_n_test": 50,
         "rpn_post_nms_top_n_test": 20, "box_detections_per_img": 10}
# docs/ENL-SPEC.md "Shapes and names": one block has 4 C C' + 3 C' + C parameters.
FPN_CHANNELS = 256
# res4 (layer3) output: 4 x 256 with Bottleneck, 256 with BasicBlock (R18 / R34).
RES4_CHANNELS = {"resnet18": 256, "resnet34": 256, "resnet50": 1024, "resnet101": 1024,
                 "resnext101_32x8d": 1024}


def expected_delta(backbone: str) -> dict[str, int]:
    return {
        "baseline": 0,
        "1nl_bu": block_params(RES4_CHANNELS[backbone]),
        "3enl_td": 3 * block_params(FPN_CHANNELS),
        "3nl_td": 3 * block_params(FPN_CHANNELS),
    }


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def meta_models():
    """Every builder x backbone x variant, built on the meta device (no memory,
    no initialisation cost: the builders' code runs, the tensors are shapes)."""
    models = {}
    with torch.device("meta"):
        for head, (builder, _) in BUILDERS.items():
            for backbone in BACKBONES:
                for variant in VARIANTS:
                    models[head, backbone, variant] = builder(
                        backbone_name=backbone, variant=variant, num_classes=4)
    return models


def _assert_same_outputs(enl, baseline):
    """Same pyramid and same detections on one image: the added blocks are the identity."""
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, e in zip(enl.backbone(image).values(), baseline.backbone(image).values(),
                        strict=True):
            assert torch.equal(a, e)
        for a, e in zip(enl([image[0]]), baseline([image[0]]), strict=True):
            assert all(torch.equal(a[k], e[k]) for k in e)


@pytest.mark.parametrize("head", sorted(BUILDERS))
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_variant_builds_with_the_predicted_parameter_delta(meta_models, head, backbone):
    baseline = count(meta_models[head, backbone, "baseline"])
    assert set(RES4_CHANNELS) == set(BACKBONES)
    for variant, delta in expected_delta(backbone).items():
        model = meta_models[head, backbone, variant]
        assert isinstance(model, BUILDERS[head][1])
        assert count(model) - baseline == delta, variant


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_block_placement(meta_models, backbone):
    plain = meta_models["mask", backbone, "baseline"]
    assert type(plain.backbone.fpn) is FeaturePyramidNetwork

    bottom_up = meta_models["mask", backbone, "1nl_bu"].backbone
    stage = list(bottom_up.body.layer3.named_children())
    plain_stage = list(plain.backbone.body.layer3.named_children())
    # Wang et al.: right before the last residual block of res4; block names kept.
    assert [name for name, _ in stage] == (
        [name for name, _ in plain_stage[:-1]] + ["non_local", plain_stage[-1][0]])
    block = bottom_up.body.layer3.non_local
    assert isinstance(block, enl_torch.NonLocal)
    assert (block.mode, block.in_channels) == ("embedded_gaussian", RES4_CHANNELS[backbone])
    assert type(bottom_up.fpn) is FeaturePyramidNetwork

    for variant, kind in (("3enl_td", enl_torch.ENL), ("3nl_td", enl_torch.NonLocal)):
        fpn = meta_models["mask", backbone, variant].backbone.fpn
        assert isinstance(fpn, ENLFeaturePyramidNetwork)
        placed = [level for level, m in zip(fpn.levels, fpn.top_down_blocks, strict=True)
                  if isinstance(m, kind)]
        assert sorted(placed) == [3, 4, 5]
        if kind is enl_torch.NonLocal:
            assert all(m.mode == "embedded_gaussian" for m in fpn.top_down_blocks
                       if isinstance(m, kind))


def test_block_levels_and_kwargs_reach_the_fpn():
    with torch.device("meta"):
        model = fasterrcnn_enl_resnet_fpn(variant="+3ENL TD", block_levels=(4, 3, 2),
                                          block_kwargs={"dct_size": 7}, num_classes=2)
    fpn = model.backbone.fpn
    blocks = {level: m for level, m in zip(fpn.levels, fpn.top_down_blocks, strict=True)
              if isinstance(m, enl_torch.ENL)}
    assert sorted(blocks) == [2, 3, 4]
    assert all(m.dct_size == (7, 7) for m in blocks.values())


def test_added_blocks_train_when_the_backbone_is_frozen():
    with torch.device("meta"):
        model = maskrcnn_enl_resnet_fpn(variant="1nl_bu", trainable_backbone_layers=0,
                                        num_classes=2)
    body = model.backbone.body
    assert not any(p.requires_grad for n, p in body.named_parameters() if "non_local" not in n)
    assert all(p.requires_grad for p in body.layer3.non_local.parameters())


@pytest.mark.parametrize(("head", "backbone", "variant"), [
    ("mask", "resnet50", "3enl_td"),
    ("faster", "resnet50", "3nl_td"),
    ("mask", "resnet101", "1nl_bu"),
    pytest.param("faster", "resnext101_32x8d", "3enl_td", marks=pytest.mark.slow),
])
def test_eval_forward(head, backbone, variant):
    builder, _ = BUILDERS[head]
    torch.manual_seed(0)
    model = builder(backbone_name=backbone, variant=variant, num_classes=4, **SMALL).eval()
    images = [torch.rand(3, 64, 64), torch.rand(3, 48, 80)]
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2
    keys = {"boxes", "labels", "scores"} | ({"masks"} if head == "mask" else set())
    for detection, image in zip(detections, images, strict=True):
        assert set(detection) == keys
        n = detection["boxes"].shape[0]
        assert detection["boxes"].shape == (n, 4) and torch.isfinite(detection["boxes"]).all()
        assert ((detection["labels"] >= 1) & (detection["labels"] < 4)).all()
        if head == "mask":
            assert detection["masks"].shape == (n, 1, *image.shape[-2:])


def test_plain_detector_weights_load_and_the_enl_detector_starts_as_it(tmp_path):
    """A baseline checkpoint (a local file) loads into +3ENL TD; the new blocks
    are zero-initialised, so the pyramid and the detections are the baseline's."""
    torch.manual_seed(0)
    baseline = maskrcnn_enl_resnet_fpn(variant="baseline", num_classes=3, **SMALL).eval()
    path = tmp_path / "baseline.pt"
    torch.save(baseline.state_dict(), path)
    enl = maskrcnn_enl_resnet_fpn(variant="3enl_td", weights=str(path), **SMALL).eval()
    assert enl.roi_heads.box_predictor.cls_score.out_features == 3  # read from the file
    assert isinstance(enl.backbone.body.layer1[0].bn1, FrozenBatchNorm2d)  # pretrained rule
    _assert_same_outputs(enl, baseline)


@pytest.mark.parametrize("head", sorted(BUILDERS))
def test_fpn_channels_and_block_input_norm_reach_the_detector(head):
    """The main job's CPU detector: R18, 64 FPN channels, normalised block inputs."""
    builder, _ = BUILDERS[head]
    channels = 64
    with torch.device("meta"):
        models = {(variant, norm): builder(backbone_name="resnet18", variant=variant,
                                           fpn_channels=channels, block_input_norm=norm,
                                           num_classes=4)
                  for variant in ("baseline", "3enl_td") for norm in (False, True)}
    plain = models["baseline", False]
    assert type(plain.backbone.fpn) is FeaturePyramidNetwork
    assert plain.backbone.out_channels == channels
    assert plain.backbone.fpn.layer_blocks[0][0].out_channels == channels
    assert plain.rpn.head.conv[0][0].in_channels == channels
    # No blocks, nothing to normalise: the baseline is the same with the option on.
    assert count(models["baseline", True]) == count(plain)
    fpn = models["3enl_td", True].backbone.fpn
    assert fpn.block_input_norm and fpn.inner_blocks[0][0].out_channels == channels
    wrapped = {level: m for level, m in zip(fpn.levels, fpn.top_down_blocks, strict=True)
               if isinstance(m, NormalizedInputBlock)}
    assert sorted(wrapped) == [3, 4, 5]
    assert all(isinstance(m.block, enl_torch.ENL) and m.block.in_channels == channels
               and isinstance(m.norm, nn.BatchNorm2d) and m.norm.num_features == channels
               for m in wrapped.values())
    # Three blocks, plus a norm (weight and bias) each.
    assert count(models["3enl_td", False]) - count(plain) == 3 * block_params(channels)
    assert count(models["3enl_td", True]) - count(plain) == 3 * (
        block_params(channels) + 2 * channels)


def test_plain_weights_load_into_block_input_norm_and_it_starts_as_the_plain_detector(tmp_path):
    """A baseline checkpoint loads (the norms are new keys like the blocks'), and at
    init x + (ENL(BN(x)) - BN(x)) == x: the same pyramid and detections."""
    small = {**SMALL, "backbone_name": "resnet18", "fpn_channels": 64}
    torch.manual_seed(0)
    baseline = maskrcnn_enl_resnet_fpn(variant="baseline", num_classes=3, **small).eval()
    path = tmp_path / "baseline.pt"
    torch.save(baseline.state_dict(), path)
    enl = maskrcnn_enl_resnet_fpn(variant="3enl_td", weights=str(path), block_input_norm=True,
                                  **small).eval()
    new_keys = set(enl.state_dict()) - set(baseline.state_dict())
    assert any(".norm.running_var" in k for k in new_keys)
    assert all(k.startswith("backbone.fpn.top_down_blocks.") for k in new_keys)
    _assert_same_outputs(enl, baseline)


@pytest.mark.parametrize(("backbone", "variant", "norm"), [
    ("resnet18", "3enl_td", True),
    ("resnet34", "1nl_bu", False),
])
def test_basic_block_resnets_train_a_step_and_predict(backbone, variant, norm):
    """BasicBlock backbones: one SGD step reaches the added blocks (and norms), eval runs."""
    torch.manual_seed(0)
    model = maskrcnn_enl_resnet_fpn(backbone_name=backbone, variant=variant, num_classes=3,
                                    fpn_channels=64, block_input_norm=norm, **SMALL)
    image = torch.rand(3, 64, 64)
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 16:40, 20:44] = 1
    target = {"boxes": torch.tensor([[20.0, 16.0, 44.0, 40.0]]), "labels": torch.tensor([2]),
              "masks": masks}
    # Two images (the second mirrored: columns 20..44 map onto themselves, same box).
    flipped = {**target, "masks": masks.flip(-1)}
    losses = model([image, image.flip(-1)], [target, flipped])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    added = {n: p for n, p in model.named_parameters()
             if "top_down_blocks" in n or "non_local" in n}
    per_block = 8 + (2 if norm else 0)  # theta, phi, g, out (+ the norm's weight, bias)
    assert len(added) == per_block * (3 if variant == "3enl_td" else 1)
    assert all(p.grad is not None for p in added.values())
    assert torch.count_nonzero(next(p.grad for n, p in added.items()
                                    if n.endswith("out.weight"))) > 0
    model.eval()
    with torch.no_grad():
        (detections,) = model([image])
    assert torch.isfinite(detections["boxes"]).all()
    assert detections["masks"].shape[-2:] == (64, 64)


def test_backbone_weights_from_a_local_file(tmp_path):
    torch.manual_seed(1)
    imagenet = resnet50()
    path = tmp_path / "resnet50.pt"
    torch.save(imagenet.state_dict(), path)
    model = fasterrcnn_enl_resnet_fpn(variant="1nl_bu", weights_backbone=path, num_classes=2)
    body = model.backbone.body
    assert torch.equal(body.conv1.weight, imagenet.conv1.weight)
    assert torch.equal(body.layer3[-1].conv2.weight, imagenet.layer3[-1].conv2.weight)
    assert torch.equal(body.layer3[-1].bn2.running_var, imagenet.layer3[-1].bn2.running_var)
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    # torchvision's default with pretrained weights: layer2..layer4 train, the rest is frozen.
    assert not body.conv1.weight.requires_grad and not body.layer1[0].conv1.weight.requires_grad
    assert body.layer2[0].conv1.weight.requires_grad


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"variant": "2enl"}, ValueError, "`variant` must be one of"),
    ({"backbone_name": "resnet152"}, ValueError, "`backbone_name` must be one of"),
    ({"fpn_channels": 0}, ValueError, "`fpn_channels` must be a positive int, received 0"),
    ({"fpn_channels": 64.0}, ValueError, "`fpn_channels` must be a positive int"),
    ({"block_input_norm": "yes"}, TypeError, "`block_input_norm` must be a bool"),
    ({"trainable_backbone_layers": 6}, ValueError, "`trainable_backbone_layers`"),
    ({"weights": "/nonexistent/detector.pt"}, FileNotFoundError, "`weights` file not found"),
    ({"weights_backbone": object()}, TypeError, "`weights_backbone` must be None, a path"),
    ({"weights": {"roi_heads.box_predictor.cls_score.weight": torch.zeros(5, 1)},
      "num_classes": 3}, ValueError, "`num_classes`=3 does not match `weights`"),
    ({"weights": {"not.a.key": torch.zeros(1)}, "num_classes": 2}, ValueError,
     "`weights` does not fit the model"),
    ({"weights_backbone": {"conv1.weight": torch.zeros(1)}}, ValueError,
     "`weights_backbone` does not fit"),
    ({"anchor_sizes": (8, 16, 32, 64)}, ValueError,
     r"`anchor_sizes` needs one size per feature map: the backbone returns 5 maps .* "
     r"received 4 sizes \(8, 16, 32, 64\)"),
    ({"anchor_sizes": (8, 16, 0, 64, 128)}, ValueError, "`anchor_sizes` must hold positive"),
    ({"anchor_sizes": "8 16 32 64 128"}, ValueError, "`anchor_sizes` must be a non-empty"),
    ({"aspect_ratios": ()}, ValueError, "`aspect_ratios` must be a non-empty sequence"),
    ({"aspect_ratios": (1.0, True)}, ValueError, "`aspect_ratios` must hold positive"),
    ({"box_head_fc_dims": (256.0,)}, ValueError, "`box_head_fc_dims` must hold positive ints"),
    ({"mask_head_channels": (64, -1)}, ValueError, "`mask_head_channels` must hold positive"),
    ({"anchor_sizes": (8, 16, 32, 64, 128), "rpn_anchor_generator": heads.anchor_generator(
        None, None, 5)}, ValueError, r"builds what \['rpn_anchor_generator'\] already give"),
    ({"box_head_fc_dims": (256,), "box_predictor": nn.Linear(1, 1), "num_classes": None},
     ValueError, r"`box_head_fc_dims`=\(256,\) builds what \['box_predictor'\]"),
    ({"mask_head_channels": (64,), "mask_head": nn.Identity()}, ValueError,
     r"\['mask_head'\] already give"),
])
def test_bad_arguments_raise_naming_them(kwargs, error, match):
    with pytest.raises(error, match=match):
        maskrcnn_enl_resnet_fpn(**{"num_classes": 2, **kwargs})


# Small, non-default sizes for every sized part (the main job derives its own
# from Model Garden's YAML with enl_experiments.main.torch_job.detector_kwargs).
SIZED = {"anchor_sizes": (8, 16, 32, 64, 128), "box_head_fc_dims": (256,),
         "mask_head_channels": (64, 64), "rpn_pre_nms_top_n_train": 1000,
         "rpn_post_nms_top_n_train": 256, "rpn_pre_nms_top_n_test": 500,
         "rpn_post_nms_top_n_test": 200, "box_batch_size_per_image": 128,
         "box_detections_per_img": 50}


def test_detector_sizes_default_to_torchvisions():
    with torch.device("meta"):
        model = maskrcnn_enl_resnet_fpn(num_classes=4)
    assert model.rpn.anchor_generator.sizes == ((32,), (64,), (128,), (256,), (512,))
    assert model.rpn.anchor_generator.aspect_ratios == ((0.5, 1.0, 2.0),) * 5
    assert type(model.roi_heads.box_head).__name__ == "TwoMLPHead"
    assert model.roi_heads.box_head.fc7.out_features == 1024
    assert [m[0].out_channels for m in model.roi_heads.mask_head] == [256] * 4
    assert model.roi_heads.mask_predictor.conv5_mask.out_channels == 256
    assert (model.rpn._pre_nms_top_n, model.rpn._post_nms_top_n) == (
        {"training": 2000, "testing": 1000}, {"training": 2000, "testing": 1000})
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 512
    assert model.roi_heads.detections_per_img == 100


@pytest.mark.parametrize("head", sorted(BUILDERS))
def test_sized_parts_reach_the_detector(head):
    builder, _ = BUILDERS[head]
    sized = {k: v for k, v in SIZED.items()
             if head == "mask" or k != "mask_head_channels"}
    with torch.device("meta"):
        model = builder(backbone_name="resnet18", fpn_channels=64, num_classes=4,
                        aspect_ratios=(0.5, 1, 2), **sized)
    generator = model.rpn.anchor_generator
    assert generator.sizes == ((8,), (16,), (32,), (64,), (128,))
    assert generator.aspect_ratios == ((0.5, 1.0, 2.0),) * 5
    assert model.rpn.head.cls_logits.out_channels == 3  # one size x three ratios
    fcs = [m for m in model.roi_heads.box_head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in fcs] == [(64 * 7 * 7, 256)]
    predictor = model.roi_heads.box_predictor
    assert (predictor.cls_score.in_features, predictor.cls_score.out_features) == (256, 4)
    assert predictor.bbox_pred.out_features == 16
    assert (model.rpn._pre_nms_top_n, model.rpn._post_nms_top_n) == (
        {"training": 1000, "testing": 500}, {"training": 256, "testing": 200})
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 128
    assert model.roi_heads.detections_per_img == 50
    if head == "mask":
        convs = [m[0] for m in model.roi_heads.mask_head]
        assert [(c.in_channels, c.out_channels) for c in convs] == [(64, 64), (64, 64)]
        mask_predictor = model.roi_heads.mask_predictor
        assert (mask_predictor.conv5_mask.in_channels, mask_predictor.conv5_mask.out_channels,
                mask_predictor.mask_fcn_logits.out_channels) == (64, 64, 4)
    else:
        with pytest.raises(ValueError, match="`mask_head_channels` is for Mask R-CNN"):
            builder(num_classes=4, mask_head_channels=(64,))


@pytest.mark.parametrize("sizes", [None, (8, 16, 32, 64, 128)])
def test_small_objects_match_an_anchor_only_with_small_anchors(sizes):
    """An 8 px object (the embedded dataset's are 6-11 px at 128 px input) overlaps
    torchvision's smallest anchors (32 px) by IoU ~1/16, under the RPN's background
    threshold 0.3; Garden's 8 px anchors on P2 cover it exactly."""
    torch.manual_seed(0)
    model = maskrcnn_enl_resnet_fpn(backbone_name="resnet18", fpn_channels=64, num_classes=4,
                                    anchor_sizes=sizes, **SMALL).eval()
    images, _ = model.transform([torch.rand(3, 64, 64)])
    with torch.no_grad():
        features = list(model.backbone(images.tensors).values())
    (anchors,) = model.rpn.anchor_generator(images, features)
    target = torch.tensor([[20.0, 20.0, 28.0, 28.0]])
    best = box_iou(target, anchors).max().item()
    if sizes is None:
        assert best < model.rpn.proposal_matcher.low_threshold == 0.3
        assert best == pytest.approx(1 / 16, abs=0.005)
    else:
        assert best == pytest.approx(1.0)


def test_sized_detector_trains_a_step_and_predicts():
    torch.manual_seed(0)
    model = maskrcnn_enl_resnet_fpn(backbone_name="resnet18", variant="3enl_td",
                                    block_input_norm=True, fpn_channels=64, num_classes=4,
                                    **{**SIZED, "min_size": 64, "max_size": 64,
                                       "box_detections_per_img": 5})
    image = torch.rand(3, 64, 64)
    masks = torch.zeros(2, 64, 64, dtype=torch.uint8)
    masks[0, 10:18, 30:38] = 1
    masks[1, 30:54, 8:40] = 1
    target = {"boxes": torch.tensor([[30.0, 10.0, 38.0, 18.0], [8.0, 30.0, 40.0, 54.0]]),
              "labels": torch.tensor([1, 3]), "masks": masks}
    losses = model([image, image], [target, target])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for part in (model.roi_heads.box_head, model.roi_heads.mask_head,
                 model.roi_heads.mask_predictor, model.rpn.head):
        assert all(p.grad is not None and torch.isfinite(p.grad).all()
                   for p in part.parameters())
    model.eval()
    with torch.no_grad():
        (detections,) = model([image])
    assert len(detections["boxes"]) <= 5
    assert detections["masks"].shape[1:] == (1, 64, 64)


def test_readme_example(readme_example, capsys):
    exec(readme_example("torch-detection"), {})
    printed = capsys.readouterr().out
    assert "{2: 'Identity', 3: 'ENL', 4: 'ENL', 5: 'ENL'}" in printed
    assert "'masks': (" in printed


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("head", sorted(BUILDERS))
def test_every_builder_trains_a_step_and_predicts(head, backbone, variant):
    """Every paper row, really built: one SGD step (finite losses, gradients on
    every trainable parameter that the step reaches) and an eval forward."""
    builder, _ = BUILDERS[head]
    torch.manual_seed(0)
    model = builder(backbone_name=backbone, variant=variant, num_classes=3, **SMALL)
    image = torch.rand(3, 64, 64)
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 16:40, 20:44] = 1
    target = {"boxes": torch.tensor([[20.0, 16.0, 44.0, 40.0]]), "labels": torch.tensor([2])}
    if head == "mask":
        target["masks"] = masks
    losses = model([image], [target])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    added = [p for n, p in model.named_parameters()
             if "top_down_blocks" in n or "non_local" in n]
    # theta, phi, g, out: a weight and a bias each, per block.
    assert len(added) == 8 * {"baseline": 0, "1nl_bu": 1, "3enl_td": 3, "3nl_td": 3}[variant]
    assert all(p.grad is not None for p in added)
    model.eval()
    with torch.no_grad():
        (detections,) = model([image])
    assert torch.isfinite(detections["boxes"]).all()


# --- bad input, generated: each error names the argument and the value --------



@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_the_kwargs_accepted_are_torchvisions(name):
    """What the builders let through is what the installed torchvision's
    FasterRCNN / MaskRCNN and GeneralizedRCNNTransform take, read from them."""
    _, cls = BUILDERS[name]
    torchvision_names = set(inspect.signature(cls.__init__).parameters) - {
        "self", "backbone", "num_classes", "kwargs"}
    assert torchvision_names <= detector_kwarg_names(cls)
    assert {"size_divisible", "fixed_size", "box_detections_per_img"} <= detector_kwarg_names(cls)
    assert ("mask_head" in detector_kwarg_names(cls)) == (cls is MaskRCNN)
    builder_name = BUILDERS[name][0].__name__
    assert {"block_kwargs", "backbone_name"} <= builder_kwarg_names(builder_name)


unknown_keys = st.from_regex(r"[a-z][a-z_]{2,24}", fullmatch=True).filter(
    lambda key: key not in detector_kwarg_names(MaskRCNN) and key not in {
        p for p in inspect.signature(maskrcnn_enl_resnet_fpn).parameters})


@pytest.mark.parametrize("name", sorted(BUILDERS))
@given(key=st.one_of(st.just("box_detections_per_imgs"), st.just("foo"), unknown_keys),
       value=st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5)))
def test_unknown_kwargs_are_refused_by_name(name, key, value):
    """torchvision would pass them to its transform, which ignores them."""
    builder, cls = BUILDERS[name]
    with pytest.raises(TypeError, match=rf"unknown keyword argument\(s\) \['{key}'\] for "
                                        rf"{cls.__name__} \(received \{{'{key}': "
                                        rf"{re.escape(repr(value))}\}}\).*box_detections_per_img"):
        builder(num_classes=3, **{key: value})


@pytest.mark.parametrize("name", sorted(BUILDERS))
@given(value=st.one_of(st.integers(max_value=1), st.booleans(), st.floats(allow_nan=False),
                       st.text(max_size=3)))
def test_bad_num_classes_are_refused_at_build(name, value):
    """0, 1, negative, bool, float, str: refused before anything is built (0
    used to build and fail with an IndexError in training)."""
    builder, _ = BUILDERS[name]
    with pytest.raises((TypeError, ValueError),
                       match=rf"`num_classes` must be .*received {re.escape(repr(value))}"):
        builder(num_classes=value)
