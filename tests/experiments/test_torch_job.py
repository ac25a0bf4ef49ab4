"""The Model Garden config -> torch builder translation of the main job (no TensorFlow)."""

from __future__ import annotations

import copy

import pytest
import yaml

from enl_experiments.main import profiles, runners, torch_job

# A garden task.model with a distinct number in every field the translation
# reads, so a field read from the wrong place shows.
GARDEN_MODEL = {
    "min_level": 2, "max_level": 5,
    "anchor": {"anchor_size": 3.0, "aspect_ratios": [0.25, 4.0]},
    "roi_generator": {"pre_nms_top_k": 901, "num_proposals": 302,
                      "test_pre_nms_top_k": 403, "test_num_proposals": 104},
    "roi_sampler": {"num_sampled_rois": 96},
    "detection_head": {"num_convs": 0, "num_fcs": 2, "fc_dims": 48},
    "mask_head": {"num_convs": 3, "num_filters": 40},
    "detection_generator": {"max_num_detections": 17},
}


def test_garden_fields_map_to_torchvision_names():
    assert torch_job.detector_kwargs(GARDEN_MODEL) == {
        # anchor_size x stride on P2..P5, then torchvision's extra "pool" map P6.
        "anchor_sizes": (12.0, 24.0, 48.0, 96.0, 192.0),
        "aspect_ratios": (0.25, 4.0),
        "rpn_pre_nms_top_n_train": 901, "rpn_post_nms_top_n_train": 302,
        "rpn_pre_nms_top_n_test": 403, "rpn_post_nms_top_n_test": 104,
        "box_batch_size_per_image": 96,
        "box_head_fc_dims": (48, 48),
        "mask_head_channels": (40, 40, 40),
        "box_detections_per_img": 17,
    }


def test_model_gardens_anchor_defaults_fill_what_the_yaml_leaves_out():
    model = copy.deepcopy(GARDEN_MODEL)
    del model["anchor"]
    kwargs = torch_job.detector_kwargs(model)
    assert kwargs["anchor_sizes"] == (32.0, 64.0, 128.0, 256.0, 512.0)  # anchor_size 8
    assert kwargs["aspect_ratios"] == (0.5, 1.0, 2.0)


@pytest.mark.parametrize(("change", "pattern"), [
    (lambda m: m["anchor"].update(num_scales=3), r"`task.model.anchor.num_scales` must be 1"),
    (lambda m: m["detection_head"].update(num_convs=4),
     r"`task.model.detection_head.num_convs` must be 0 .* received 4"),
    (lambda m: m.pop("roi_sampler"), r"no `task.model.roi_sampler.num_sampled_rois`"),
    (lambda m: m.pop("max_level"), r"no `task.model.max_level`"),
])
def test_what_torch_cannot_build_is_named(change, pattern):
    model = copy.deepcopy(GARDEN_MODEL)
    change(model)
    with pytest.raises(ValueError, match=pattern):
        torch_job.detector_kwargs(model)


def test_flags_parse_back_to_the_builder_arguments():
    from enl_torch.train import build_parser

    kwargs = torch_job.detector_kwargs(GARDEN_MODEL)
    parsed = build_parser().parse_args(["--data-dir", "d", "--output-dir", "o",
                                        *torch_job.detector_flags(kwargs)])
    lists = {"anchor_sizes": parsed.anchor_sizes, "aspect_ratios": parsed.aspect_ratios,
             "box_head_fc_dims": parsed.box_head_fc_dims,
             "mask_head_channels": parsed.mask_head_channels}
    assert {**{k: tuple(v) for k, v in lists.items()}, **dict(parsed.model_kwarg)} == kwargs


def test_the_main_jobs_common_config_builds_a_torch_detector():
    """The beach profile's torch detector is the one its garden YAML describes:
    built here from the translation, on the meta device (no weights)."""
    import torch

    from enl_torch.detection import maskrcnn_enl_resnet_fpn

    profile = profiles.get_profile("default")
    path = runners.config_root() / profile.garden_configs[0]
    model_config = yaml.safe_load(path.read_text())["task"]["model"]
    kwargs = runners.TorchRunner(profile).detector_kwargs("3enl_td")
    assert kwargs == torch_job.detector_kwargs(model_config)
    with torch.device("meta"):
        model = maskrcnn_enl_resnet_fpn(backbone_name="resnet18", fpn_channels=64,
                                        num_classes=4, **kwargs)
    sizes = model.rpn.anchor_generator.sizes
    assert [size for (size,) in sizes] == list(kwargs["anchor_sizes"])
    assert model.roi_heads.detections_per_img == kwargs["box_detections_per_img"]


def test_a_profile_sized_from_garden_needs_a_common_config():
    with pytest.raises(ValueError, match="`torch_detector_from_garden`"):
        profiles.Profile("x", 64, 1, 1, 1, 1, 1, 0.1, 1, 1,
                         garden_configs=(None, "configs/beach_baseline.yaml", None))
