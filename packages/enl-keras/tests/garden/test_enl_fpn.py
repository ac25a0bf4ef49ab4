"""ENLFPN: Model Garden's FPN with (E)NL blocks on the top-down stream."""

from __future__ import annotations

import numpy as np
import pytest

from enl_core.cost import block_params
from enl_core.testing import assert_close

pytestmark = pytest.mark.garden

tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")

IMAGE = 128
BACKBONE_CHANNELS = {2: 16, 3: 24, 4: 32, 5: 40}
FILTERS = 32


def _specs():
    return {str(level): tf.TensorShape([None, IMAGE // 2**level, IMAGE // 2**level, channels])
            for level, channels in BACKBONE_CHANNELS.items()}


def _features(seed=0, batch=2):
    rng = np.random.default_rng(seed)
    return {str(level): tf.constant(rng.normal(size=(batch, IMAGE // 2**level, IMAGE // 2**level,
                                                     channels)), tf.float32)
            for level, channels in BACKBONE_CHANNELS.items()}


def _enl_fpn(**kwargs):
    from enl_keras.garden.modeling.decoders.enl_fpn import ENLFPN

    return ENLFPN(input_specs=_specs(), min_level=2, max_level=6, num_filters=FILTERS, **kwargs)


def _fpn():
    from official.vision.modeling.decoders.fpn import FPN

    return FPN(input_specs=_specs(), min_level=2, max_level=6, num_filters=FILTERS)


def _randomize_blocks(decoder, seed=1):
    # Non-zero output projections, so each block changes what flows down. Small
    # weights: ENL's affinity term is cubic in its input, and three blocks in a
    # row with large random weights overflow float16 (max 65504).
    rng = np.random.default_rng(seed)
    for block in decoder.blocks.values():
        for weight in block.weights:
            weight.assign(rng.normal(0.0, 0.05, size=weight.shape).astype(np.float32))


def _upsample(x):
    return tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)


def _expected(decoder, features, levels):
    """The coarse-to-fine ENL-FPN written out layer by layer (ENL-SPEC placement)."""
    get = decoder.get_layer
    blocks = decoder.blocks
    top_down = {}
    for level in (5, 4, 3, 2):
        merged = get(f"lateral_{level}")(features[str(level)])
        if level < 5:
            merged = merged + _upsample(top_down[level + 1])
        top_down[level] = blocks[level](merged) if level in levels else merged
    outputs = {level: get(f"post_hoc_{level}")(top_down[level]) for level in (2, 3, 4, 5)}
    outputs[6] = get("coarser_6")(outputs[5])
    return {str(level): get(f"norm_{level}")(value, training=False)
            for level, value in outputs.items()}


@pytest.mark.parametrize("block,levels", [("enl", (5, 4, 3)), ("nl", (4, 3)), ("enl", (4, 3, 2))])
def test_blocks_sit_on_the_merged_top_down_feature(block, levels):
    decoder = _enl_fpn(levels=levels, block=block, dct_size=(3, 3))
    _randomize_blocks(decoder)
    features = _features()
    actual = decoder(features, training=False)
    expected = _expected(decoder, features, levels)
    assert sorted(actual) == ["2", "3", "4", "5", "6"]
    for level in expected:
        assert actual[level].shape[-1] == FILTERS
        assert_close(actual[level].numpy(), expected[level].numpy(), "float32",
                     err_msg=f"level {level}")


def test_zero_initialised_blocks_leave_model_gardens_fpn_unchanged():
    enl_fpn, fpn = _enl_fpn(), _fpn()
    block_weights = {id(w) for b in enl_fpn.blocks.values() for w in b.weights}
    # Same layer names and creation order: FPN weights map one to one.
    shared = [w for w in enl_fpn.weights if id(w) not in block_weights]
    assert [w.shape for w in shared] == [w.shape for w in fpn.weights]
    for target, source in zip(shared, fpn.weights, strict=True):
        target.assign(source)
    features = _features(seed=2)
    actual, expected = enl_fpn(features), fpn(features)
    assert enl_fpn.output_specs.keys() == fpn.output_specs.keys()
    for level in expected:
        assert_close(actual[level].numpy(), expected[level].numpy(), "float32")


@pytest.mark.parametrize("block", ["enl", "nl"])
def test_parameter_delta_is_the_cost_model(block):
    levels = (5, 4, 3)
    delta = _enl_fpn(levels=levels, block=block).count_params() - _fpn().count_params()
    assert delta == len(levels) * block_params(FILTERS)


def test_config_round_trip():
    from enl_keras.garden.modeling.decoders.enl_fpn import ENLFPN

    decoder = _enl_fpn(levels=(4, 3), block="enl", inter_channels=8, dct_size=(5, 7),
                       position_encoding=False)
    config = decoder.get_config()
    assert config["levels"] == [4, 3] and config["dct_size"] == [5, 7]
    assert config["inter_channels"] == 8 and config["position_encoding"] is False
    clone = ENLFPN.from_config(config)
    assert clone.get_config() == config
    clone.set_weights(decoder.get_weights())
    features = _features(seed=3)
    for level, value in decoder(features).items():
        assert_close(clone(features)[level].numpy(), value.numpy(), "float32")
    assert tf_keras.utils.get_registered_name(ENLFPN) == "ENL>ENLFPN"
    assert tf_keras.utils.get_registered_object("ENL>ENLFPN") is ENLFPN


@pytest.mark.parametrize("kwargs,field", [
    ({"levels": (6, 5)}, "levels"),  # 6 is a coarser (RetinaNet-style) level, not top-down
    ({"levels": (1,)}, "levels"),
    ({"levels": ()}, "levels"),
    ({"block": "transformer"}, "block"),
    ({"dct_size": 0}, "dct_size"),
    ({"dct_size": (9, 0)}, "dct_size"),
    ({"inter_channels": 0}, "inter_channels"),
])
def test_invalid_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        _enl_fpn(**kwargs)


@pytest.mark.parametrize("kwargs,field", [
    ({"block": "transformer"}, "block"),
    ({"dct_size": [0, 9]}, "dct_size"),
    ({"levels": []}, "levels"),
])
def test_invalid_config_fails_when_built(kwargs, field):
    from enl_keras.garden.configs.decoders import ENLFPN

    with pytest.raises(ValueError, match=field):
        ENLFPN(**kwargs)


def test_registered_builder_reads_the_config():
    from official.vision.modeling.decoders import factory

    from enl_keras.garden.configs.maskrcnn import MaskRCNN
    from enl_keras.garden.modeling.decoders.enl_fpn import ENLFPN

    model_config = MaskRCNN(min_level=2, max_level=6)
    model_config.override({"decoder": {"type": "enl_fpn", "enl_fpn": {
        "num_filters": FILTERS, "levels": [4, 3], "block": "nl"}}})
    decoder = factory.build_decoder(_specs(), model_config)
    assert isinstance(decoder, ENLFPN)
    assert sorted(decoder.blocks) == [3, 4]
    assert decoder.get_config()["block"] == "nl"
    # A YAML override is checked when the model is built, naming the field.
    model_config.override({"decoder": {"enl_fpn": {"levels": [7]}}})
    with pytest.raises(ValueError, match="levels"):
        factory.build_decoder(_specs(), model_config)
    model_config.override({"decoder": {"enl_fpn": {"levels": [4], "block": "nonlocal"}}})
    with pytest.raises(ValueError, match="block"):
        factory.build_decoder(_specs(), model_config)


def test_l2_weight_decay_covers_the_block_kernels():
    regularizer = tf_keras.regularizers.l2(1e-3)
    from enl_keras.garden.modeling.decoders.enl_fpn import ENLFPN

    decoder = ENLFPN(input_specs=_specs(), min_level=2, max_level=6, num_filters=FILTERS,
                     kernel_regularizer=regularizer)
    _randomize_blocks(decoder)
    kernels = [w for w in decoder.trainable_weights if "kernel" in w.name]
    block_kernels = [w for b in decoder.blocks.values() for w in b.trainable_weights
                     if "kernel" in w.name]
    assert len(block_kernels) == 6
    expected = sum(float(regularizer(w)) for w in kernels)
    assert float(tf.add_n(decoder.losses)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("policy,dtype", [("mixed_bfloat16", "bfloat16"),
                                          ("mixed_float16", "float16")])
def test_mixed_precision_matches_float32(policy, dtype):
    reference = _enl_fpn(dct_size=(5, 5))
    _randomize_blocks(reference)
    tf_keras.mixed_precision.set_global_policy(policy)
    try:
        mixed = _enl_fpn(dct_size=(5, 5))
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    mixed.set_weights(reference.get_weights())
    assert all(w.dtype == tf.float32 for w in mixed.weights)  # float32 variables
    features = _features(seed=4)
    actual = mixed(features, training=False)
    expected = reference(features, training=False)
    for level in expected:
        assert actual[level].dtype == dtype
        assert np.all(np.isfinite(actual[level].numpy().astype(np.float32)))
        assert_close(actual[level].numpy().astype(np.float32), expected[level].numpy(), dtype,
                     err_msg=f"level {level}")


def test_xla_compiles_to_the_same_outputs():
    decoder = _enl_fpn(dct_size=(5, 5))
    _randomize_blocks(decoder)
    features = _features(seed=5)
    compiled = tf.function(lambda x: decoder(x, training=False), jit_compile=True)
    actual = compiled(features)
    expected = decoder(features, training=False)
    for level in expected:
        assert_close(actual[level].numpy(), expected[level].numpy(), "float32")
