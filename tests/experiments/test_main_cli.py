"""The main job's command line: seeds and their validation (no training here)."""

from __future__ import annotations

import pytest

from enl_experiments.main import cli as main


def test_seed_list_starts_at_first_seed():
    assert main.seed_list(0, 3) == [0, 1, 2]
    assert main.seed_list(1, 2) == [1, 2]


@pytest.mark.parametrize(("first", "count", "name"), [(-1, 1, "first_seed"), (0, 0, "seeds"),
                                                      (True, 1, "first_seed"), (0, 1.5, "seeds")])
def test_seed_list_rejects_bad_values(first, count, name):
    with pytest.raises(ValueError, match=f"`{name}`.*received"):
        main.seed_list(first, count)


@pytest.mark.parametrize("argv", [["--seeds", "0"], ["--first-seed", "-2"]])
def test_bad_seed_flags_exit_with_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as raised:
        main.main(argv)
    assert raised.value.code == 2
    assert "received" in capsys.readouterr().err


@pytest.mark.parametrize("argv, flag", [
    (["--num-train", "0"], "--num-train"), (["--train-steps", "-5"], "--train-steps"),
    (["--learning-rate", "nan"], "--learning-rate"), (["--learning-rate", "0"], "--learning-rate"),
])
def test_bad_overrides_exit_with_usage_error(argv, flag, capsys):
    with pytest.raises(SystemExit) as raised:
        main.main(argv)
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert f"`{flag}`" in err and "received" in err


def test_num_train_with_coco_is_refused(tmp_path, capsys):
    code = main.main(["--coco-dir", str(tmp_path), "--num-train", "5",
                      "--results-dir", str(tmp_path / "results")])
    assert code == 1
    err = capsys.readouterr().err
    assert "`num_train`" in err and "coco_dir" in err
    assert "nothing was written" in err and ".incomplete" not in err
    assert not (tmp_path / "results").exists()


def test_a_failure_after_the_run_began_names_its_partial_folder(tmp_path, capsys):
    """A step that fails once the run's folder exists: the message names that folder."""
    coco = tmp_path / "coco"
    coco.mkdir()  # no train2017/ etc.: the data step fails after the run's folder is made
    code = main.main(["--coco-dir", str(coco), "--profile", "tiny", "--run-name", "r",
                      "--data-dir", str(tmp_path / "data"),
                      "--results-dir", str(tmp_path / "results")])
    assert code == 1
    err = capsys.readouterr().err
    partial = tmp_path / "results" / ".incomplete-r"
    assert partial.is_dir()
    assert f"partial output stays in {partial}" in err


def test_an_existing_results_folder_is_refused_before_anything_is_written(tmp_path, capsys):
    (tmp_path / "results" / "r").mkdir(parents=True)
    code = main.main(["--profile", "tiny", "--run-name", "r",
                      "--results-dir", str(tmp_path / "results")])
    assert code == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "nothing was written" in err
    assert not (tmp_path / "results" / ".incomplete-r").exists()


def test_num_train_sizes_the_training_images_and_keeps_validation(tmp_path):
    """``--num-train`` changes the training subset only: the validation images,
    their labels and the twins are the same as the profile's own."""
    import dataclasses
    import json

    from enl_experiments.main.profiles import get_profile

    args = main.build_parser().parse_args(["--profile", "tiny", "--data-dir", str(tmp_path)])
    profile = get_profile("tiny")
    own = main.prepare_data(args, profile)
    fewer = main.prepare_data(args, dataclasses.replace(profile, num_train=3))
    assert own.root != fewer.root
    train = json.loads(fewer.train_annotations.read_text())
    assert len(train["images"]) == 3
    assert len(json.loads(own.train_annotations.read_text())["images"]) == profile.num_train
    assert fewer.val_annotations.read_bytes() == own.val_annotations.read_bytes()
    for image in json.loads(own.val_annotations.read_text())["images"]:
        name = image["file_name"]
        assert (fewer.val_images / name).read_bytes() == (own.val_images / name).read_bytes()
