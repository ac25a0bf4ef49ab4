"""Where the main job finds its YAML configs, data and results; the extras it checks first."""

from __future__ import annotations

import shutil

import pytest

from enl_experiments.bench import cli as bench_cli
from enl_experiments.common import extras
from enl_experiments.main import cli, profiles, runners


def test_packaged_configs_hold_every_profiles_files():
    root = runners.config_root()
    for profile in profiles.PROFILES.values():
        for name in profile.garden_configs:
            assert name is None or (root / name).is_file(), (profile.name, name)


def test_config_dir_overrides_the_packaged_files(tmp_path):
    shutil.copy(runners.config_root() / "beach_common.yaml", tmp_path / "beach_common.yaml")
    runner = runners.get_runner("garden", profiles.get_profile("tiny"), tmp_path)
    # beach_baseline.yaml is not in the override folder: the error names it.
    with pytest.raises(runners.StepFailed, match=r"beach_baseline\.yaml not found"):
        runner.config_files("baseline")
    shutil.copy(runners.config_root() / "beach_baseline.yaml", tmp_path / "beach_baseline.yaml")
    assert runner.config_files("baseline") == [tmp_path / "beach_common.yaml",
                                               tmp_path / "beach_baseline.yaml"]


def test_config_dir_must_be_a_folder(tmp_path):
    with pytest.raises(ValueError, match="`config_dir`.*received"):
        runners.config_root(tmp_path / "missing")
    with pytest.raises(ValueError, match="`config_dir`.*received"):
        runners.get_runner("torch", profiles.get_profile("tiny"), tmp_path / "missing")


def test_torch_runner_derives_its_detector_from_the_config_dir(tmp_path):
    """The torch mirror's sizes come from the common garden YAML of --config-dir,
    its decoder from the variant's (the files Model Garden would train on)."""
    for name in ("beach_common.yaml", "beach_baseline.yaml"):
        (tmp_path / name).write_text((runners.config_root() / name).read_text())
    runner = runners.get_runner("torch", profiles.get_profile("tiny"), tmp_path)
    assert runner.config_files("baseline") == [tmp_path / "beach_common.yaml",
                                               tmp_path / "beach_baseline.yaml"]
    (tmp_path / "beach_common.yaml").unlink()
    with pytest.raises(runners.StepFailed, match="beach_common.yaml"):
        runner.config_files("baseline")


def test_a_variant_yaml_overriding_a_detector_section_reaches_the_torch_mirror(tmp_path):
    """One reader of the garden YAML: a section the variant's file sets (here the
    anchors) overrides the common file's for torch as it does for Model Garden."""
    import yaml

    for name in ("beach_common.yaml", "beach_baseline.yaml"):
        (tmp_path / name).write_text((runners.config_root() / name).read_text())
    runner = runners.get_runner("torch", profiles.get_profile("tiny"), tmp_path)
    before = runner.detector_kwargs("baseline")
    variant = yaml.safe_load((tmp_path / "beach_baseline.yaml").read_text())
    variant["task"]["model"]["anchor"] = {"anchor_size": 3.0, "aspect_ratios": [1.0],
                                          "num_scales": 1}
    (tmp_path / "beach_baseline.yaml").write_text(yaml.safe_dump(variant))
    after = runner.detector_kwargs("baseline")
    assert after["aspect_ratios"] == (1.0,) != before["aspect_ratios"]
    assert after["anchor_sizes"] != before["anchor_sizes"]
    assert {k: v for k, v in after.items() if k not in ("anchor_sizes", "aspect_ratios")} == {
        k: v for k, v in before.items() if k not in ("anchor_sizes", "aspect_ratios")}


def test_a_variant_yaml_setting_one_field_keeps_the_common_files_others(tmp_path):
    """Model Garden merges a later --config_file field by field: a variant that
    sets only ``roi_generator.num_proposals`` keeps the common file's other
    proposal counts (a section-by-section reader dropped them to defaults)."""
    import yaml

    for name in ("beach_common.yaml", "beach_baseline.yaml"):
        (tmp_path / name).write_text((runners.config_root() / name).read_text())
    runner = runners.get_runner("torch", profiles.get_profile("tiny"), tmp_path)
    before = runner.detector_kwargs("baseline")
    variant = yaml.safe_load((tmp_path / "beach_baseline.yaml").read_text())
    variant["task"]["model"]["roi_generator"] = {"num_proposals": 128}
    (tmp_path / "beach_baseline.yaml").write_text(yaml.safe_dump(variant))
    after = runner.detector_kwargs("baseline")
    assert after == {**before, "rpn_post_nms_top_n_train": 128}
    common = runners.garden_model([tmp_path / "beach_common.yaml"])
    merged = runners.garden_model(runner.config_files("baseline"))
    assert merged["roi_generator"] == {**common["roi_generator"], "num_proposals": 128}


def test_a_missing_extra_is_named_with_its_pip_line():
    with pytest.raises(extras.MissingExtra, match=r"the garden framework needs "
                       r"`pip install enl-experiments\[garden\]` \(missing: no_such_module\)"):
        extras.require_modules("the garden framework", ("json", "no_such_module"), "garden")
    extras.require_modules("the garden framework", ("json",), "garden")
    with pytest.raises(ValueError, match="`modules` must be top-level"):
        extras.require_modules("x", ("enl_keras.garden",), "garden")


def test_the_main_job_names_the_missing_extra_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runners.TorchRunner, "modules", ("torch", "no_such_torchvision"))
    assert cli.main(["--profile", "tiny", "--framework", "torch"]) == 1
    assert "needs `pip install enl-experiments[torch]`" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_bench_names_the_missing_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(bench_cli.SECTION_MODULES, "torch", ("no_such_torch",))
    assert bench_cli.main(["--sections", "torch", "--out", str(tmp_path / "bench")]) == 1
    assert "torch section needs `pip install enl-experiments[bench]`" in capsys.readouterr().err


def test_dry_run_reads_the_configs_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--dry-run", "--profile", "tiny", "--framework", "garden"]) == 0
    out = capsys.readouterr().out
    assert "beach_common.yaml" in out and "beach_enl.yaml" in out
    # Data and results default to the current folder.
    assert f"data: {tmp_path / 'data'}" in out and f"results: {tmp_path / 'results'}" in out
    assert list(tmp_path.iterdir()) == []
