"""Bad Model Garden config values, generated: each error names the field and the value.

The ENL-FPN decoder config (``configs.decoders.ENLFPN``, checked when the
config is made), the ENL-FPN decoder model (where YAML overrides are checked
when the model is built) and the NL backbone (``ResNetNL``, whose checks run
before any layer is built). Hypothesis draws the bad values.
"""

from __future__ import annotations

import hypothesis
import hypothesis.strategies as st
import pytest

pytestmark = pytest.mark.garden

tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")

not_bool = st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5),
                     st.sampled_from(["false", "true", "False", "no"]))
bad_dct_size = st.one_of(
    st.integers(max_value=0),
    st.lists(st.integers(max_value=0), min_size=2, max_size=2),
    st.lists(st.integers(min_value=1, max_value=9), min_size=3, max_size=4))
bad_levels = st.one_of(
    st.just([]),
    st.lists(st.integers(min_value=2, max_value=5), min_size=2, max_size=3).filter(
        lambda v: len(set(v)) < len(v)),  # a repeated level
    st.lists(st.floats(allow_nan=False), min_size=1, max_size=2),
    st.lists(st.text(min_size=1, max_size=2), min_size=1, max_size=2))
FIELDS = {
    "block": st.text(max_size=6).filter(lambda v: v not in ("enl", "nl")),
    "block_norm": st.text(max_size=6).filter(lambda v: v not in ("batch", "layer")),
    "block_input_norm": not_bool,
    "position_encoding": not_bool,
    "dct_size": bad_dct_size,
    "block_levels": bad_levels,
}


def _specs():
    return {str(level): tf.TensorShape([None, 64 // 2**level, 64 // 2**level, 8])
            for level in range(2, 6)}


def check_named(call, field, value):
    with pytest.raises((ValueError, TypeError)) as error:
        call()
    message = str(error.value)
    assert f"`{field}`" in message, message
    shown = repr(tuple(value) if field == "dct_size" and isinstance(value, list) else value)
    assert shown in message or repr(value) in message, (value, message)


@pytest.mark.parametrize("field", sorted(FIELDS))
@hypothesis.given(data=st.data())
def test_decoder_config_names_a_bad_field(field, data):
    from enl_keras.garden.configs.decoders import ENLFPN

    value = data.draw(FIELDS[field], label=field)
    check_named(lambda: ENLFPN(**{field: value}), field, value)


@pytest.mark.parametrize("field", sorted(FIELDS) + ["inter_channels"])
@hypothesis.given(data=st.data())
def test_decoder_model_names_a_bad_field(field, data):
    from enl_keras.garden.modeling.decoders.enl_fpn import ENLFPN

    strategy = FIELDS.get(field, st.integers(max_value=0))
    value = data.draw(strategy, label=field)
    check_named(lambda: ENLFPN(input_specs=_specs(), min_level=2, max_level=6, num_filters=8,
                               **{field: value}), field, value)


@hypothesis.given(value=st.one_of(st.integers(min_value=-3, max_value=9).filter(
    lambda v: v not in (2, 3, 4, 5)), st.text(max_size=2)))
def test_backbone_names_a_bad_nl_level(value):
    check_named(lambda: _resnet_nl(nl_level=value), "nl_level", value)


@hypothesis.given(value=st.one_of(st.integers(max_value=0), st.floats(allow_nan=False),
                                  st.text(min_size=1, max_size=3)))
def test_backbone_names_bad_nl_inter_channels(value):
    check_named(lambda: _resnet_nl(nl_inter_channels=value), "nl_inter_channels", value)


@hypothesis.given(value=not_bool)
def test_backbone_names_a_bad_nl_scale(value):
    check_named(lambda: _resnet_nl(nl_scale=value), "nl_scale", value)


def _resnet_nl(**kwargs):
    from enl_keras.garden.modeling.backbones.resnet_nl import ResNetNL

    return ResNetNL(model_id=18, input_specs=tf_keras.layers.InputSpec(
        shape=[None, 64, 64, 3]), **kwargs)
