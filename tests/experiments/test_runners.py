"""The framework adapters' plumbing: child processes, run configs, arguments (no framework)."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import yaml

from enl_experiments.dataset import generate_dataset
from enl_experiments.main import profiles, runners
from enl_experiments.main.cli import _data_paths


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("beach")
    generate_dataset(root, num_train=2, num_val=3, image_size=64, seed=0)
    return _data_paths(root, root / "tfrecords")


def test_run_logged_tees_output_and_tracks_steps(tmp_path):
    script = "import sys\nfor s in (1, 2, 3): print(f'train | step: {s} |', flush=True)"
    runners.run_logged([sys.executable, "-c", script], tmp_path / "log.txt", "demo", total=3,
                       step_pattern=r"train \| step: (\d+)")
    log = (tmp_path / "log.txt").read_text()
    assert "train | step: 3 |" in log and log.startswith("$ ")


def test_run_logged_failure_names_the_step_and_shows_the_tail(tmp_path):
    script = "print('the real cause'); raise SystemExit(3)"
    with pytest.raises(runners.StepFailed, match=r"demo failed \(exit code 3\)") as error:
        runners.run_logged([sys.executable, "-c", script], tmp_path / "log.txt", "demo")
    assert "the real cause" in str(error.value) and str(tmp_path / "log.txt") in str(error.value)


def test_data_paths_counts_the_background(data):
    assert data.num_classes == 4  # person, ball, swimmer + background


def test_garden_run_config_carries_the_profile_budget(tmp_path, data):
    profile = profiles.get_profile("tiny")
    runner = runners.get_runner("garden", profile)
    config = yaml.safe_load(runner._run_config(data, seed=7, out=tmp_path).read_text())
    assert config["task"]["model"] == {"num_classes": 4, "input_size": [64, 64, 3]}
    assert config["task"]["train_data"]["seed"] == 7
    assert config["task"]["train_data"]["global_batch_size"] == profile.batch_size
    assert config["trainer"]["train_steps"] == profile.train_steps
    assert config["trainer"]["validation_steps"] == 1  # 3 images, batch 4
    cosine = config["trainer"]["optimizer_config"]["learning_rate"]["cosine"]
    assert cosine["decay_steps"] == profile.train_steps
    own = dataclasses.replace(profile, own_schedule=True)
    config = yaml.safe_load(runners.GardenRunner(own)._run_config(data, 0, tmp_path).read_text())
    assert "trainer" not in config and config["task"]["model"] == {"num_classes": 4}


def test_every_profile_names_config_files_that_exist():
    for profile in profiles.PROFILES.values():
        for name in profile.garden_configs:
            assert name is None or (runners.config_root() / name).is_file(), name


def test_torch_arguments_parse_with_the_mirror_parser(tmp_path, data):
    profile = profiles.get_profile("paper")
    args = runners.TorchRunner(profile)._args("enl", data, 3, tmp_path)
    assert args[args.index("--variant") + 1] == "3enl_td"
    assert args[args.index("--min-size") + 1] == "800"
    assert args[args.index("--seed") + 1] == "3"
    # torch is imported here only; this test module never imports TensorFlow.
    from enl_torch.train import build_parser

    parsed = build_parser().parse_args(args)
    assert (parsed.variant, parsed.min_size, parsed.max_size) == ("3enl_td", 800, 1333)


def _decoder_block_input_norm(config_name: str) -> tuple[bool, str]:
    config = yaml.safe_load((runners.config_root() / config_name).read_text())
    decoder = config["task"]["model"]["decoder"]
    options = decoder.get(decoder["type"], {})
    # Absent keys take enl_keras.garden's defaults (False, "batch").
    return bool(options.get("block_input_norm", False)), options.get("block_norm", "batch")


def test_profile_block_input_norm_mirrors_the_garden_enl_config():
    """Profile.block_input_norm / block_norm (what the torch mirror gets) are the ENL YAML's."""
    for profile in profiles.PROFILES.values():
        assert (profile.block_input_norm, profile.block_norm) == _decoder_block_input_norm(
            profile.garden_configs[2]), profile.name
    default = profiles.get_profile("default")
    assert (default.block_input_norm, default.block_norm) == (True, "layer")  # beach_enl.yaml


@pytest.mark.parametrize(("name", "backbone", "channels", "enl_norm"), [
    ("default", "resnet18", 64, True),
    ("tiny", "resnet18", 64, True),
    ("paper", "resnet50", 256, False),
])
def test_torch_model_arguments_follow_the_profile(tmp_path, data, name, backbone, channels,
                                                  enl_norm):
    """Train and predict get the same list, so the ENL model is rebuilt as trained."""
    from enl_torch.train import build_parser

    runner = runners.TorchRunner(profiles.get_profile(name))
    for model in runners.MODELS:
        parsed = build_parser().parse_args(runner._args(model, data, 0, tmp_path))
        assert (parsed.backbone, parsed.fpn_channels) == (backbone, channels)
        assert parsed.block_input_norm == (enl_norm and model == "enl"), model
        if parsed.block_input_norm:
            assert parsed.block_norm == runner.profile.block_norm == "layer"


# Model Garden defaults (official/vision/configs/maskrcnn.py) for what the YAML
# leaves out; read here as numbers so this module never imports TensorFlow.
GARDEN_ANCHOR_DEFAULTS = {"aspect_ratios": [0.5, 1.0, 2.0], "num_scales": 1}


def test_profile_torch_detector_mirrors_the_garden_common_config():
    """Profile.torch_detector (anchors, proposals, RoIs, heads, detections) agrees
    with the garden YAML the same profile trains; paper keeps torchvision's."""
    checked = 0
    for profile in profiles.PROFILES.values():
        common = profile.garden_configs[0]
        if common is None:
            assert profile.torch_detector is None, profile.name
            continue
        model = yaml.safe_load((runners.config_root() / common).read_text())["task"]["model"]
        torch_detector = profile.torch_detector
        anchor = {**GARDEN_ANCHOR_DEFAULTS, **model["anchor"]}
        assert anchor["num_scales"] == 1  # torch: one size per map
        levels = range(model["min_level"], model["max_level"] + 1)
        garden_sizes = [anchor["anchor_size"] * 2**level for level in levels]
        # torchvision's FPN has one more map ("pool", P6): the same rule one level up.
        assert list(torch_detector.anchor_sizes) == [
            *garden_sizes, anchor["anchor_size"] * 2 ** (model["max_level"] + 1)], profile.name
        assert list(torch_detector.aspect_ratios) == anchor["aspect_ratios"]
        generator = model["roi_generator"]
        assert (torch_detector.rpn_pre_nms_top_n_train, torch_detector.rpn_post_nms_top_n_train,
                torch_detector.rpn_pre_nms_top_n_test, torch_detector.rpn_post_nms_top_n_test) == (
            generator["pre_nms_top_k"], generator["num_proposals"],
            generator["test_pre_nms_top_k"], generator["test_num_proposals"])
        assert torch_detector.box_batch_size_per_image == model["roi_sampler"]["num_sampled_rois"]
        head = model["detection_head"]
        assert head["num_convs"] == 0
        assert list(torch_detector.box_head_fc_dims) == [head["fc_dims"]] * head["num_fcs"]
        mask = model["mask_head"]
        assert list(torch_detector.mask_head_channels) == [mask["num_filters"]] * mask["num_convs"]
        assert (torch_detector.detections_per_img
                == model["detection_generator"]["max_num_detections"])
        checked += 1
    assert checked == 3  # default, full, tiny


def test_torch_detector_arguments_reach_train_and_predict(tmp_path, data):
    """Both models get the profile's detector sizes; ``_args`` is the list train and
    ``torch_job predict`` parse, so the predicted model is the trained one."""
    from enl_torch.train import build_parser

    for name in ("default", "paper"):
        profile = profiles.get_profile(name)
        runner = runners.TorchRunner(profile)
        for model in runners.MODELS:
            parsed = build_parser().parse_args(runner._args(model, data, 0, tmp_path))
            kwargs = dict(parsed.model_kwarg)
            if profile.torch_detector is None:
                assert (parsed.anchor_sizes, parsed.box_head_fc_dims, kwargs) == (None, None, {})
                continue
            expected = profile.torch_detector
            assert tuple(parsed.anchor_sizes) == expected.anchor_sizes
            assert tuple(parsed.aspect_ratios) == expected.aspect_ratios
            assert tuple(parsed.box_head_fc_dims) == expected.box_head_fc_dims
            assert tuple(parsed.mask_head_channels) == expected.mask_head_channels
            assert kwargs == {
                "rpn_pre_nms_top_n_train": expected.rpn_pre_nms_top_n_train,
                "rpn_post_nms_top_n_train": expected.rpn_post_nms_top_n_train,
                "rpn_pre_nms_top_n_test": expected.rpn_pre_nms_top_n_test,
                "rpn_post_nms_top_n_test": expected.rpn_post_nms_top_n_test,
                "box_batch_size_per_image": expected.box_batch_size_per_image,
                "box_detections_per_img": expected.detections_per_img}


def test_unknown_framework_and_profile_are_named():
    with pytest.raises(ValueError, match="framework"):
        runners.get_runner("jax", profiles.get_profile("tiny"))
    with pytest.raises(ValueError, match="profile"):
        profiles.get_profile("huge")
