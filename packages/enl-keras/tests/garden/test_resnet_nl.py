"""ResNetNL: Model Garden's ResNet with one NonLocal before res4's last block."""

from __future__ import annotations

import numpy as np
import pytest

from enl_core.cost import block_params
from enl_core.testing import assert_close

pytestmark = pytest.mark.garden

tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")

IMAGE = 128


def _specs():
    return tf_keras.layers.InputSpec(shape=[None, IMAGE, IMAGE, 3])


def _resnet_nl(model_id=18, **kwargs):
    from enl_keras.garden.modeling.backbones.resnet_nl import ResNetNL

    return ResNetNL(model_id=model_id, input_specs=_specs(), **kwargs)


def _resnet(model_id=18):
    from official.vision.modeling.backbones.resnet import ResNet

    return ResNet(model_id=model_id, input_specs=_specs())


@pytest.fixture(scope="module")
def models():
    return _resnet_nl(), _resnet()


def test_block_sits_before_the_last_residual_block_of_res4(models):
    backbone, _ = models
    non_local = backbone.get_layer("nonlocal_l4")
    assert non_local.mode == "embedded_gaussian"
    # Its input is res4 after its first block (ResNet-18: 2 blocks, 256 channels, stride 16).
    assert tuple(non_local.input.shape) == (None, IMAGE // 16, IMAGE // 16, 256)
    producer = non_local.inbound_nodes[0].inbound_layers
    consumer = non_local.outbound_nodes[0].outbound_layer
    stage_end = backbone.get_layer("block_group_l4")
    assert type(producer).__name__ == type(consumer).__name__ == "ResidualBlock"
    assert consumer.outbound_nodes[0].outbound_layer is stage_end


def test_parameter_delta_is_the_cost_model(models):
    backbone, baseline = models
    assert backbone.count_params() - baseline.count_params() == block_params(256)


def test_zero_initialised_block_leaves_model_gardens_resnet_unchanged(models):
    backbone, baseline = models
    block_weights = {id(w) for w in backbone.get_layer("nonlocal_l4").weights}
    shared = [w for w in backbone.weights if id(w) not in block_weights]
    assert [w.shape for w in shared] == [w.shape for w in baseline.weights]
    for target, source in zip(shared, baseline.weights, strict=True):
        target.assign(source)
    images = tf.constant(np.random.default_rng(0).normal(size=(1, IMAGE, IMAGE, 3)), tf.float32)
    actual, expected = backbone(images, training=False), baseline(images, training=False)
    for level in expected:
        assert_close(actual[level].numpy(), expected[level].numpy(), "float32")


def test_config_round_trip(models):
    from enl_keras.garden.modeling.backbones.resnet_nl import ResNetNL

    backbone, _ = models
    config = backbone.get_config()
    assert (config["nl_level"], config["nl_inter_channels"], config["nl_scale"]) == (4, None, True)
    clone = ResNetNL.from_config({**config, "input_specs": _specs()})
    assert clone.get_config() == config
    assert clone.count_params() == backbone.count_params()


def test_stage_with_one_block_gets_the_block_before_it():
    backbone = _resnet_nl(model_id=10, nl_level=5, nl_inter_channels=16)
    non_local = backbone.get_layer("nonlocal_l5")
    assert tuple(non_local.input.shape)[-1] == 256  # res4 output, the only res5 block's input
    assert backbone.count_params() - _resnet(10).count_params() == block_params(256, 16)


def test_registered_builder_reads_the_config():
    from official.vision.configs import common
    from official.vision.modeling.backbones import factory

    from enl_keras.garden.configs.backbones import Backbone, ResNetNL
    from enl_keras.garden.modeling.backbones import resnet_nl

    config = Backbone(type="resnet_nl", resnet_nl=ResNetNL(model_id=18, nl_level=3))
    backbone = factory.build_backbone(_specs(), config, common.NormActivation())
    assert isinstance(backbone, resnet_nl.ResNetNL)
    assert backbone.get_layer("nonlocal_l3").input.shape[-1] == 128


@pytest.mark.parametrize("kwargs,field", [({"nl_level": 6}, "nl_level"),
                                          ({"nl_level": 1}, "nl_level")])
def test_invalid_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        _resnet_nl(**kwargs)
    with pytest.raises(TypeError, match="nl_inter_channels"):
        _resnet_nl(nl_inter_channels=2.5)
    with pytest.raises(TypeError, match="`nl_scale` must be a bool.*'false'"):
        _resnet_nl(nl_scale="false")


def test_l2_weight_decay_reaches_the_block_through_its_arguments():
    regularizer = tf_keras.regularizers.l2(1e-3)
    backbone = _resnet_nl(kernel_regularizer=regularizer)
    block = backbone.get_layer("nonlocal_l4")
    assert block.get_config()["kernel_regularizer"]["config"]["l2"] == pytest.approx(1e-3)
    kernels = [block.projection_kernel, block.output_kernel]
    assert sorted(float(loss) for loss in block.losses) == pytest.approx(
        sorted(float(regularizer(kernel)) for kernel in kernels), rel=1e-6)
    model_losses = sorted(float(loss) for loss in backbone.losses)
    for kernel in kernels:  # each block kernel has its term in the model's losses
        assert float(regularizer(kernel)) == pytest.approx(
            min(model_losses, key=lambda loss: abs(loss - float(regularizer(kernel)))), rel=1e-6)
