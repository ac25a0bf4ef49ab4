"""The framework adapters' plumbing: child processes, run configs, arguments (no framework)."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import yaml

from enl_experiments.common import proc
from enl_experiments.dataset import generate_dataset
from enl_experiments.main import profiles, runners, torch_job
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
    args = runners.TorchRunner(profile)._args("3enl_td", data, 3, tmp_path)
    assert args[args.index("--variant") + 1] == "3enl_td"
    assert args[args.index("--min-size") + 1] == "800"
    assert args[args.index("--seed") + 1] == "3"
    # torch is imported here only; this test module never imports TensorFlow.
    from enl_torch.train import build_parser

    parsed = build_parser().parse_args(args)
    assert (parsed.variant, parsed.min_size, parsed.max_size) == ("3enl_td", 800, 1333)


def test_torch_decoder_flags_come_from_the_variants_garden_decoder(tmp_path, data):
    """The torch mirror's FPN width and block-input norm are read from the
    garden YAML of each variant, not copied: a config folder whose ENL decoder
    says otherwise changes them (and a quoted 'false' is refused)."""
    from enl_torch.train import build_parser

    configs = tmp_path / "configs"
    configs.mkdir()
    for path in runners.config_root().iterdir():
        if path.name.endswith(".yaml"):
            (configs / path.name).write_text(path.read_text())
    enl = yaml.safe_load((configs / "beach_enl.yaml").read_text())
    enl["task"]["model"]["decoder"]["enl_fpn"].update(num_filters=96, block_norm="batch")
    (configs / "beach_enl.yaml").write_text(yaml.safe_dump(enl))
    runner = runners.TorchRunner(profiles.get_profile("default"), configs)
    parsed = build_parser().parse_args(runner._args("3enl_td", data, 0, tmp_path))
    assert (parsed.fpn_channels, parsed.block_input_norm, parsed.block_norm) == (96, True,
                                                                                "batch")
    parsed = build_parser().parse_args(runner._args("baseline", data, 0, tmp_path))
    assert (parsed.fpn_channels, parsed.block_input_norm) == (64, False)
    enl["task"]["model"]["decoder"]["enl_fpn"]["block_input_norm"] = "false"
    (configs / "beach_enl.yaml").write_text(yaml.safe_dump(enl))
    with pytest.raises(TypeError, match="block_input_norm.*'false'"):
        runner._args("3enl_td", data, 0, tmp_path)


def test_decoder_kwargs_defaults_are_the_garden_decoders():
    """An absent field takes the value Model Garden / enl_keras.garden would."""
    assert torch_job.decoder_kwargs({}) == {"fpn_channels": 256, "block_input_norm": False,
                                            "block_norm": "batch"}
    assert torch_job.decoder_kwargs({"decoder": {"type": "enl_fpn", "enl_fpn": {
        "block_input_norm": True}}})["block_norm"] == "batch"
    with pytest.raises(ValueError, match="num_filters"):
        torch_job.decoder_kwargs({"decoder": {"type": "fpn", "fpn": {"num_filters": "64"}}})


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
        assert parsed.block_input_norm == (enl_norm and model == "3enl_td"), model
        if parsed.block_input_norm:
            assert parsed.block_norm == "layer"  # beach_enl.yaml


def test_torch_detector_arguments_reach_train_and_predict(tmp_path, data):
    """Both models get the detector sizes derived from the profile's common garden
    YAML; ``_args`` is the list train and ``torch_job predict`` parse, so the
    predicted model is the trained one; paper keeps torchvision's sizes."""
    from enl_torch.train import build_parser

    for name in ("default", "paper"):
        profile = profiles.get_profile(name)
        runner = runners.TorchRunner(profile)
        for model in runners.MODELS:
            expected = runner.detector_kwargs(model)
            assert (expected is None) == (name == "paper")
            parsed = build_parser().parse_args(runner._args(model, data, 0, tmp_path))
            kwargs = dict(parsed.model_kwarg)
            if expected is None:
                assert (parsed.anchor_sizes, parsed.box_head_fc_dims, kwargs) == (None, None, {})
                continue
            assert torch_detector_from_parsed(parsed) == expected


def torch_detector_from_parsed(parsed) -> dict:
    """The builder arguments ``enl_torch.train`` builds from its parsed flags."""
    return {"anchor_sizes": tuple(parsed.anchor_sizes),
            "aspect_ratios": tuple(parsed.aspect_ratios),
            "box_head_fc_dims": tuple(parsed.box_head_fc_dims),
            "mask_head_channels": tuple(parsed.mask_head_channels),
            **dict(parsed.model_kwarg)}


def test_main_job_models_are_variants_of_the_shared_table():
    from enl_core.variants import garden_experiment, get_variant

    assert runners.GARDEN_EXPERIMENTS == {"baseline": "maskrcnn_resnetfpn_coco",
                                          "1nl_bu": "maskrcnn_resnetfpn_nlbu_coco",
                                          "3enl_td": "maskrcnn_resnetfpn_enl_coco"}
    for model in runners.MODELS:
        variant = get_variant(model)
        assert runners.LABELS[model] == variant.label
        assert runners.GARDEN_EXPERIMENTS[model] == garden_experiment(variant)


def test_unknown_framework_and_profile_are_named():
    with pytest.raises(ValueError, match="framework"):
        runners.get_runner("jax", profiles.get_profile("tiny"))
    with pytest.raises(ValueError, match="profile"):
        profiles.get_profile("huge")


def test_variants_are_parsed_in_canonical_order_with_the_baseline():
    from enl_experiments.main.variants import VARIANTS, parse_variants

    assert parse_variants("") == VARIANTS == ("baseline", "1nl_bu", "3enl_td")
    assert parse_variants("3enl_td") == ("baseline", "3enl_td")
    assert parse_variants("3enl_td,baseline,1nl_bu,3enl_td") == VARIANTS
    with pytest.raises(ValueError, match="`variants`.*enl"):
        parse_variants("baseline,enl")


def test_every_variant_has_a_garden_config_and_experiment_per_profile():
    from enl_experiments.main.variants import GARDEN_CONFIG_SLOT, GARDEN_EXPERIMENTS, VARIANTS

    assert set(GARDEN_CONFIG_SLOT) == set(GARDEN_EXPERIMENTS) == set(VARIANTS)
    for profile in profiles.PROFILES.values():
        for variant in VARIANTS:
            name = profile.garden_configs[GARDEN_CONFIG_SLOT[variant]]
            assert name is not None and (runners.config_root() / name).is_file(), name
    nlbu = yaml.safe_load((runners.config_root() / "beach_nlbu.yaml").read_text())
    common = yaml.safe_load((runners.config_root() / "beach_common.yaml").read_text())
    backbone = nlbu["task"]["model"]["backbone"]
    assert backbone["type"] == "resnet_nl" and backbone["resnet_nl"]["nl_level"] == 4
    # The same ResNet as every other variant, plus the block.
    resnet = common["task"]["model"]["backbone"]["resnet"]
    assert {k: backbone["resnet_nl"][k] for k in resnet} == resnet


def test_twins_reach_the_converter_and_both_children(tmp_path, data):
    twin_data = dataclasses.replace(data, image_size=(64, 256),
                                    twin_annotations=data.root / "twin.json",
                                    twin_images=data.root / "twin2017")
    assert twin_data.splits == ("train2017", "val2017", "twin2017")
    assert data.splits == ("train2017", "val2017")
    runner = runners.GardenRunner(profiles.get_profile("tiny"))
    config = yaml.safe_load(runner._run_config(twin_data, 0, tmp_path).read_text())
    assert config["task"]["model"]["input_size"] == [64, 256, 3]
    assert config["task"]["train_data"]["deterministic"] is True
    torch_args = runners.TorchRunner(profiles.get_profile("tiny"))._args("baseline", twin_data, 0,
                                                                       tmp_path)
    assert torch_args[torch_args.index("--min-size") + 1] == "64"
    assert torch_args[torch_args.index("--max-size") + 1] == "256"


def test_garden_defaults_are_model_gardens():
    """torch_job copies Model Garden's anchor and decoder defaults as numbers
    (it never imports TensorFlow); read the real ones in a child process."""
    import json
    import subprocess

    code = ("import json\n"
            "from official.vision.configs import decoders, maskrcnn\n"
            "from enl_keras.garden.configs.decoders import ENLFPN\n"
            "anchor, enl = maskrcnn.Anchor(), ENLFPN()\n"
            "print(json.dumps({'anchor': {k: getattr(anchor, k) for k in "
            "('num_scales', 'aspect_ratios', 'anchor_size')}, 'decoder': {"
            "'num_filters': decoders.FPN().num_filters, 'enl_num_filters': enl.num_filters, "
            "'block_input_norm': enl.block_input_norm, 'block_norm': enl.block_norm}}))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, env=proc.child_env(TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-2000:]
    garden = json.loads(result.stdout.strip().splitlines()[-1])
    assert garden["anchor"] == torch_job.GARDEN_ANCHOR_DEFAULTS
    defaults = dict(torch_job.GARDEN_DECODER_DEFAULTS)
    assert garden["decoder"] == {**defaults, "enl_num_filters": defaults["num_filters"]}
