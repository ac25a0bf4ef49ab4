"""enl_experiments/configs/garden/*.yaml: one file per R50 / R101 row of the paper's Tables 1, 2.

Each file is loaded the way ``--config_file`` loads it (Model Garden's
``hyperparams.override_params_dict`` over the experiment named on its first
line) and checked against the paper's protocol.
"""

from __future__ import annotations

import os
from importlib import resources

import pytest

from enl_core.cost import block_params

pytestmark = pytest.mark.garden

# The packaged files, as the main job reads them (a regular folder in any install).
CONFIG_DIR = str(resources.files("enl_experiments") / "configs" / "garden")
ROWS = sorted(f"{arch}_r{depth}_{row}.yaml" for arch in ("fasterrcnn", "maskrcnn")
              for depth in (50, 101) for row in ("baseline", "nlbu", "enl"))
OVERRIDE = ("task.train_data.input_path=coco/tfrecords/train*,"
            "task.validation_data.input_path=coco/tfrecords/val*,"
            "task.annotation_file=coco/annotations/instances_val2017.json")


def _load(name: str, params_override: str = ""):
    from official.core import exp_factory
    from official.modeling import hyperparams

    from enl_keras.garden import registry_imports  # noqa: F401

    path = os.path.join(CONFIG_DIR, name)
    with open(path) as file:
        first = file.readline()
    assert first.startswith("# experiment: "), f"{name}: first line names the experiment"
    config = exp_factory.get_exp_config(first.split(":", 1)[1].strip())
    config = hyperparams.override_params_dict(config, path, is_strict=True)
    if params_override:
        config = hyperparams.override_params_dict(config, params_override, is_strict=True)
    config.validate()
    return config


def test_one_file_per_row():
    assert sorted(f for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml")) == ROWS


@pytest.mark.parametrize("name", ROWS)
def test_row_follows_the_papers_protocol(name):
    arch, depth, row = name[:-5].split("_")
    config = _load(name, OVERRIDE)
    model, trainer = config.task.model, config.trainer
    assert model.include_mask == (arch == "maskrcnn")
    assert model.backbone.get().model_id == int(depth[1:])
    assert (model.backbone.type, model.decoder.type) == {
        "baseline": ("resnet", "fpn"), "nlbu": ("resnet_nl", "fpn"),
        "enl": ("resnet", "enl_fpn")}[row]
    if row == "enl":
        decoder = model.decoder.get()
        assert (list(decoder.block_levels), decoder.block, list(decoder.dct_size)) == (
            [5, 4, 3], "enl", [9, 9])
    # 800 px on the short side (1333 max) fits the 832 x 1344 box; multiples of 64.
    assert model.input_size == [832, 1344, 3]
    assert all(size % 2**model.max_level == 0 for size in model.input_size[:2])
    assert config.task.train_data.global_batch_size == 16
    assert trainer.train_steps == 90000
    schedule = trainer.optimizer_config.learning_rate.stepwise
    assert (list(schedule.boundaries), list(schedule.values)) == (
        [60000, 80000], [0.02, 0.002, 0.0002])
    assert config.task.train_data.input_path == "coco/tfrecords/train*"


@pytest.mark.slow
def test_r50_rows_add_the_cost_models_parameters():
    """The paper's ResNet-50 rows (256-channel FPN, NL in 1024-channel res4), built
    (three Mask R-CNN R50 builds: about 1-3 min here, hence slow)."""
    from official.core import task_factory

    small = "task.model.input_size=[256, 256, 3],task.init_checkpoint=null"
    counts = {}
    for row in ("baseline", "nlbu", "enl"):
        config = _load(f"maskrcnn_r50_{row}.yaml", small)
        counts[row] = task_factory.get_task(config.task).build_model().count_params()
    assert counts["enl"] - counts["baseline"] == 3 * block_params(256)
    assert counts["nlbu"] - counts["baseline"] == block_params(1024)
