"""Every registered experiment builds, runs, and adds exactly the cost model's parameters."""

from __future__ import annotations

import numpy as np
import pytest

from enl_core.cost import block_params

pytestmark = pytest.mark.garden

tf = pytest.importorskip("tensorflow")

from enl_keras.garden.configs.maskrcnn import EXPERIMENTS  # noqa: E402

BASELINES = {"fasterrcnn": "fasterrcnn_resnetfpn_coco", "maskrcnn": "maskrcnn_resnetfpn_coco"}
FILTERS = 64   # tiny_overrides' FPN width
RES4 = 256     # ResNet-18's res4 width


def _expected_delta(experiment: str) -> int:
    if "nlbu" in experiment:
        return block_params(RES4)  # one NL in res4
    return 3 * block_params(FILTERS)  # blocks on P5, P4, P3


def test_the_six_experiments_are_registered():
    from official.core import exp_factory

    from enl_keras.garden import registry_imports  # noqa: F401

    assert len(EXPERIMENTS) == 6
    for name in EXPERIMENTS:
        config = exp_factory.get_exp_config(name)
        model = config.task.model
        # The paper's defaults: ResNet-50 FPN, 256 channels, blocks on P5, P4, P3.
        backbone = model.backbone.get()
        assert backbone.model_id == 50
        assert model.include_mask == name.startswith("maskrcnn")
        if "nlbu" in name:
            assert (model.backbone.type, model.decoder.type, backbone.nl_level) == (
                "resnet_nl", "fpn", 4)
        else:
            decoder = model.decoder.get()
            assert model.decoder.type == "enl_fpn" and model.backbone.type == "resnet"
            assert list(decoder.block_levels) == [5, 4, 3] and decoder.num_filters == 256
            assert decoder.block == ("nl" if "nltd" in name else "enl")
        # Everything else is Model Garden's own experiment.
        baseline = exp_factory.get_exp_config(BASELINES[name.split("_")[0]])
        ours, theirs = config.as_dict(), baseline.as_dict()
        for part in ("runtime", "trainer"):
            assert ours[part] == theirs[part]
        for field in ("train_data", "validation_data", "losses", "annotation_file"):
            assert ours["task"][field] == theirs["task"][field]


# Faster R-CNN variants share every block with the Mask R-CNN ones; their four
# builds (about a minute here) run with the slow tests.
@pytest.mark.parametrize("experiment", [
    pytest.param(name, marks=pytest.mark.slow) if name.startswith("fasterrcnn") else name
    for name in EXPERIMENTS])
def test_builds_runs_and_adds_the_cost_models_parameters(built_experiments, experiment):
    config, _, model = built_experiments(experiment)
    _, _, baseline = built_experiments(BASELINES[experiment.split("_")[0]])
    assert model.count_params() - baseline.count_params() == _expected_delta(experiment)

    size = config.task.model.input_size[0]
    images = tf.constant(np.random.default_rng(0).uniform(-1, 1, size=(1, size, size, 3)),
                         tf.float32)
    outputs = model(images, image_shape=tf.constant([[size, size]], tf.float32), training=False)
    detections = config.task.model.detection_generator.max_num_detections
    assert tuple(outputs["detection_boxes"].shape) == (1, detections, 4)
    assert np.all(np.isfinite(outputs["detection_scores"].numpy()))
    if config.task.model.include_mask:
        assert outputs["detection_masks"].shape[:2] == (1, detections)
