"""ENLFPN: Model Garden's FPN with (E)NL blocks on the top-down stream."""

from __future__ import annotations

import re

import numpy as np
import pytest

from enl_core import fpn
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


def _enl_fpn(norm=None, **kwargs):
    """An ENLFPN; ``norm`` ("batch" / "layer") turns ``block_input_norm`` on with that norm."""
    from enl_keras.garden.modeling.decoders.enl_fpn import ENLFPN

    if norm:
        kwargs.update(block_input_norm=True, block_norm=norm)
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


def _block_norms(decoder):
    """The norm layers in front of the blocks (``block_input_norm=True``), by level."""
    block = decoder.get_config()["block"]
    return {level: decoder.get_layer(f"{block}_norm_{level}") for level in decoder.blocks}


def _randomize_block_norms(decoder, seed=2):
    # Away from the norms' initial near-identity, so a missing norm would show.
    rng = np.random.default_rng(seed)
    for norm in _block_norms(decoder).values():
        gamma, beta, *statistics = norm.weights  # BN: + moving mean, variance
        values = [rng.uniform(0.5, 2.0, size=gamma.shape), rng.normal(size=beta.shape)]
        if statistics:
            values += [rng.normal(size=gamma.shape), rng.uniform(0.5, 4.0, size=gamma.shape)]
        for weight, value in zip(norm.weights, values, strict=True):
            weight.assign(value.astype(np.float32))


def _upsample(coarser, lateral):
    del lateral  # the grids here halve exactly
    return tf.repeat(tf.repeat(coarser, 2, axis=1), 2, axis=2)


def _expected(decoder, features, block_input_norm=False):
    """The ENL-FPN through its own layers: laterals, the shared top-down
    reference (enl_core.fpn.top_down) with the decoder's blocks (with
    ``block_input_norm`` the branch sees the normalised feature), outputs."""
    get = decoder.get_layer
    norms = _block_norms(decoder) if block_input_norm else {}

    def block_of(level, block):
        if level not in norms:
            return block

        def normalized(merged):
            normed = norms[level](merged, training=False)
            return merged + (block(normed) - normed)

        return normalized

    laterals = {level: get(f"lateral_{level}")(features[str(level)]) for level in (2, 3, 4, 5)}
    blocks = {level: block_of(level, block) for level, block in decoder.blocks.items()}
    top_down = fpn.top_down(laterals, blocks, _upsample)
    outputs = {level: get(f"post_hoc_{level}")(top_down[level]) for level in (2, 3, 4, 5)}
    outputs[6] = get("coarser_6")(outputs[5])
    return {str(level): get(f"norm_{level}")(value, training=False)
            for level, value in outputs.items()}


@pytest.mark.parametrize("block,block_levels,norm", [
    ("enl", (5, 4, 3), None), ("nl", (4, 3), None), ("enl", (4, 3, 2), None),
    ("enl", (5, 4, 3), "batch"), ("nl", (4, 3), "batch"), ("enl", (5, 4, 3), "layer")])
def test_blocks_sit_on_the_merged_top_down_feature(block, block_levels, norm):
    position = {"dct_size": (3, 3)} if block == "enl" else {}  # NL has no position term
    decoder = _enl_fpn(norm, block_levels=block_levels, block=block, **position)
    assert sorted(decoder.blocks) == sorted(block_levels)
    _randomize_blocks(decoder)
    if norm:
        _randomize_block_norms(decoder)
    features = _features()
    actual = decoder(features, training=False)
    expected = _expected(decoder, features, block_input_norm=bool(norm))
    assert sorted(actual) == ["2", "3", "4", "5", "6"]
    for level in expected:
        assert actual[level].shape[-1] == FILTERS
        assert_close(actual[level].numpy(), expected[level].numpy(), "float32",
                     err_msg=f"level {level}")


@pytest.mark.parametrize("norm", [None, "batch", "layer"])
@pytest.mark.parametrize("training", [False, True])
def test_zero_initialised_blocks_leave_model_gardens_fpn_unchanged(norm, training):
    enl_fpn, fpn = _enl_fpn(norm), _fpn()
    if norm:
        _randomize_block_norms(enl_fpn)  # z == x whatever the norm computes
    norms = _block_norms(enl_fpn) if norm else {}
    added = [*enl_fpn.blocks.values(), *norms.values()]
    added_weights = {id(w) for layer in added for w in layer.weights}
    # Same layer names and creation order: FPN weights map one to one.
    shared = [w for w in enl_fpn.weights if id(w) not in added_weights]
    assert [w.shape for w in shared] == [w.shape for w in fpn.weights]
    for target, source in zip(shared, fpn.weights, strict=True):
        target.assign(source)
    features = _features(seed=2)
    actual, expected = enl_fpn(features, training=training), fpn(features, training=training)
    assert enl_fpn.output_specs.keys() == fpn.output_specs.keys()
    for level in expected:
        assert_close(actual[level].numpy(), expected[level].numpy(), "float32")


@pytest.mark.parametrize("norm", [None, "batch", "layer"])
@pytest.mark.parametrize("block", ["enl", "nl"])
def test_parameter_delta_is_the_cost_model(block, norm):
    block_levels = (5, 4, 3)
    plain = _fpn()
    decoder = _enl_fpn(norm, block_levels=block_levels, block=block)
    delta = decoder.count_params() - plain.count_params()
    # The optional input norm: the FPN's own batch norm (gamma, beta and two
    # statistics), or a layer norm (gamma, beta), one per block.
    per_block = {None: 0, "batch": plain.get_layer("norm_5").count_params(),
                 "layer": 2 * FILTERS}[norm]
    assert delta == len(block_levels) * (block_params(FILTERS) + per_block)


def test_layer_block_norm_normalises_each_position_alike_in_training_and_inference():
    # The point of "layer": no running statistics, so a block sees in
    # inference what it saw in training (BN's lagging statistics do not).
    decoder = _enl_fpn("layer", dct_size=(3, 3))
    _randomize_block_norms(decoder)
    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(4.0, 10.0, size=(2, 4, 4, FILTERS)), tf.float32)
    for level, norm in _block_norms(decoder).items():
        assert not norm.non_trainable_weights, f"level {level}: running statistics"
        trained, inferred = norm(x, training=True).numpy(), norm(x, training=False).numpy()
        assert_close(trained, inferred, "float32", err_msg=f"level {level}")
        gamma, beta = (w.numpy() for w in norm.weights)
        centred = (inferred - beta) / gamma
        assert_close(centred.mean(axis=-1), np.zeros((2, 4, 4)), "float32")
        assert_close(centred.std(axis=-1), np.ones((2, 4, 4)), "float32")


def test_config_round_trip():
    from enl_keras.garden.modeling.decoders.enl_fpn import ENLFPN

    decoder = _enl_fpn(block_levels=(4, 3), block="enl", inter_channels=8, dct_size=(5, 7),
                       position_encoding=False, norm="layer")
    config = decoder.get_config()
    assert config["block_levels"] == [4, 3] and config["dct_size"] == [5, 7]
    assert "levels" not in config
    assert config["inter_channels"] == 8 and config["position_encoding"] is False
    assert config["block_input_norm"] is True and config["block_norm"] == "layer"
    assert _enl_fpn().get_config()["block_input_norm"] is False  # the paper's placement
    clone = ENLFPN.from_config(config)
    assert clone.get_config() == config
    assert sorted(_block_norms(clone)) == [3, 4]
    _randomize_blocks(decoder)
    _randomize_block_norms(decoder)
    clone.set_weights(decoder.get_weights())
    features = _features(seed=3)
    for level, value in decoder(features).items():
        assert_close(clone(features)[level].numpy(), value.numpy(), "float32")
    assert tf_keras.utils.get_registered_name(ENLFPN) == "ENL>ENLFPN"
    assert tf_keras.utils.get_registered_object("ENL>ENLFPN") is ENLFPN


@pytest.mark.parametrize("kwargs,field", [
    # 6 is a coarser (RetinaNet-style) level, not top-down
    ({"block_levels": (6, 5)}, r"`block_levels` must lie on the top-down stream.*\(6, 5\)"),
    ({"block_levels": (1,)}, "block_levels"),
    ({"block_levels": ()}, "block_levels"),
    ({"block_levels": (4, 4)}, "`block_levels` must not repeat"),
    ({"block": "transformer"}, "block"),
    ({"dct_size": 0}, "dct_size"),
    ({"dct_size": (9, 0)}, "dct_size"),
    ({"inter_channels": 0}, "inter_channels"),
    ({"block_norm": "group"}, "block_norm"),
])
def test_invalid_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        _enl_fpn(**kwargs)


@pytest.mark.parametrize("kwargs,field", [
    ({"block": "transformer"}, "block"),
    ({"dct_size": [0, 9]}, "dct_size"),
    ({"block_levels": []}, "block_levels"),
    ({"block_levels": [5, -1]}, "block_levels"),
    ({"levels": [4, 4]}, "`levels` must not repeat"),  # the deprecated name names itself
    ({"block_norm": "instance"}, "block_norm"),
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
        "num_filters": FILTERS, "block_levels": [4, 3], "block": "nl"}}})
    decoder = factory.build_decoder(_specs(), model_config)
    assert isinstance(decoder, ENLFPN)
    assert sorted(decoder.blocks) == [3, 4]
    assert decoder.get_config()["block"] == "nl"
    assert decoder.get_config()["block_input_norm"] is False
    # A YAML override is checked when the model is built, naming the field.
    model_config.override({"decoder": {"enl_fpn": {"block_levels": [7]}}})
    with pytest.raises(ValueError, match="block_levels"):
        factory.build_decoder(_specs(), model_config)
    model_config.override({"decoder": {"enl_fpn": {"block_levels": [4], "block": "nonlocal"}}})
    with pytest.raises(ValueError, match="block"):
        factory.build_decoder(_specs(), model_config)


@pytest.mark.parametrize("block", ["enl", "nl"])
def test_l2_weight_decay_reaches_the_block_kernels_through_their_arguments(block):
    from enl_keras.garden.modeling.decoders.enl_fpn import ENLFPN

    regularizer = tf_keras.regularizers.l2(1e-3)
    decoder = ENLFPN(input_specs=_specs(), min_level=2, max_level=6, num_filters=FILTERS,
                     kernel_regularizer=regularizer, block=block)
    _randomize_blocks(decoder)
    for layer in decoder.blocks.values():
        # The block's own argument (serialized), not a penalty patched on from outside.
        assert layer.get_config()["kernel_regularizer"]["config"]["l2"] == pytest.approx(1e-3)
        kernels = [layer.projection_kernel, layer.output_kernel]
        assert sorted(float(loss) for loss in layer.losses) == pytest.approx(
            sorted(float(regularizer(kernel)) for kernel in kernels), rel=1e-6)
    kernels = [w for w in decoder.trainable_weights if "kernel" in w.name]
    assert len([w for b in decoder.blocks.values() for w in b.trainable_weights
                if "kernel" in w.name]) == 6
    # The model's losses: one term per kernel, the blocks' included.
    assert len(decoder.losses) == len(kernels)
    expected = sum(float(regularizer(w)) for w in kernels)
    assert float(tf.add_n(decoder.losses)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("field,value", [
    *(("block_input_norm", value) for value in ("false", "true", "False", 0, 1, None)),
    *(("position_encoding", value) for value in ("false", "true", 0, 1))])  # None: default
def test_boolean_fields_reject_anything_but_a_bool(field, value):
    """A quoted 'false' in YAML is a string, and bool('false') is True: never coerced."""
    from enl_keras.garden.configs.decoders import ENLFPN as ENLFPNConfig

    with pytest.raises(TypeError, match=rf"`{field}` must be a bool.*{value!r}"):
        _enl_fpn(**{field: value})
    with pytest.raises(TypeError, match=rf"`{field}` must be a bool.*{value!r}"):
        ENLFPNConfig(**{field: value})


def test_quoted_false_from_a_params_override_fails_when_the_model_is_built():
    from official.modeling import hyperparams
    from official.vision.modeling.decoders import factory

    from enl_keras.garden.configs.maskrcnn import MaskRCNN

    model_config = MaskRCNN(min_level=2, max_level=6)
    model_config.override({"decoder": {"type": "enl_fpn", "enl_fpn": {
        "num_filters": FILTERS, "levels": [4, 3]}}})
    model_config = hyperparams.override_params_dict(
        model_config, "decoder.enl_fpn.block_input_norm='false'", is_strict=True)
    with pytest.raises(TypeError, match="`block_input_norm` must be a bool.*'false'"):
        factory.build_decoder(_specs(), model_config)


@pytest.mark.parametrize("kwargs", [{"position_encoding": True}, {"position_encoding": False},
                                    {"dct_size": (9, 9)}, {"dct_size": 3}])
def test_nl_blocks_reject_position_encoding_and_dct_size(kwargs):
    from enl_keras.garden.configs.decoders import ENLFPN as ENLFPNConfig

    (field, value), = kwargs.items()
    with pytest.raises(ValueError, match=rf"`block` 'nl' has no position term.*{field}"):
        _enl_fpn(block="nl", **kwargs)
    with pytest.raises(ValueError, match=re.escape(f"{field}={value!r}")):
        ENLFPNConfig(block="nl", **kwargs)
    config = _enl_fpn(block="nl", levels=(4,)).get_config()
    assert (config["position_encoding"], config["dct_size"]) == (None, None)


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


def test_block_input_norm_reaches_the_model_from_a_yaml_override(tmp_path):
    """The main job's path: an experiment, then YAML files, then a params override."""
    from official.core import exp_factory, task_factory
    from official.modeling import hyperparams

    from enl_keras.garden import registry_imports  # noqa: F401

    config = exp_factory.get_exp_config("maskrcnn_resnetfpn_enl_coco")
    yaml_file = tmp_path / "enl.yaml"
    yaml_file.write_text("task:\n  model:\n    decoder:\n      enl_fpn:\n"
                         "        block_input_norm: true\n")
    config = hyperparams.override_params_dict(config, str(yaml_file), is_strict=True)
    assert config.task.model.decoder.enl_fpn.block_input_norm is True
    small = ("task.model.input_size=[128, 128, 3],task.init_checkpoint=null,"
             "task.model.backbone.resnet.model_id=18,task.model.decoder.enl_fpn.num_filters=32,"
             "task.model.decoder.enl_fpn.block_levels=[4, 3]")
    config = hyperparams.override_params_dict(config, small, is_strict=True)
    decoder = task_factory.get_task(config.task).build_model().decoder
    assert decoder.get_config()["block_input_norm"] is True
    assert sorted(_block_norms(decoder)) == [3, 4]
    # A params override turns it off again: no norm layer in front of the blocks.
    config = hyperparams.override_params_dict(
        config, "task.model.decoder.enl_fpn.block_input_norm=false", is_strict=True)
    decoder = task_factory.get_task(config.task).build_model().decoder
    assert not any(layer.name.startswith("enl_norm_") for layer in decoder.layers)


def test_levels_is_a_deprecated_name_of_block_levels():
    """``levels`` was this decoder's name for ``block_levels``: it still works,
    with a warning, in the model, in a saved config and in a YAML config."""
    from official.vision.modeling.decoders import factory

    from enl_keras.garden.configs.maskrcnn import MaskRCNN
    from enl_keras.garden.modeling.decoders.enl_fpn import ENLFPN

    with pytest.warns(DeprecationWarning, match="`levels`.*`block_levels`"):
        decoder = _enl_fpn(levels=(4, 3))
    assert sorted(decoder.blocks) == [3, 4] and decoder.get_config()["block_levels"] == [4, 3]
    old_config = {**_enl_fpn().get_config(), "levels": [4]}
    del old_config["block_levels"]
    with pytest.warns(DeprecationWarning):
        assert sorted(ENLFPN.from_config(old_config).blocks) == [4]
    with pytest.raises(ValueError, match="give only `block_levels`"):
        _enl_fpn(levels=(4, 3), block_levels=(5,))
    # A bad value of the deprecated name is reported under that name.
    for bad in [(7,), (4, 4), ()]:
        with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="^`levels`"):
            _enl_fpn(levels=bad)

    model_config = MaskRCNN(min_level=2, max_level=6)
    model_config.override({"decoder": {"type": "enl_fpn", "enl_fpn": {
        "num_filters": FILTERS, "levels": [4, 2]}}})
    with pytest.warns(DeprecationWarning):
        assert sorted(factory.build_decoder(_specs(), model_config).blocks) == [2, 4]


def test_level_rule_is_the_shared_one_of_enl_core():
    """One rule for both frameworks (enl_core.fpn.check_block_levels): what one
    decoder rejects the other rejects, with the same message."""
    stream = range(2, 6)
    for bad in [(), (4, 4), (5, -1), (6,), "54"]:
        with pytest.raises((ValueError, TypeError)) as core_error:
            fpn.check_block_levels(bad, stream)
        with pytest.raises(type(core_error.value), match=re.escape(str(core_error.value))):
            _enl_fpn(block_levels=bad)
