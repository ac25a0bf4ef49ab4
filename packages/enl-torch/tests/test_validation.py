"""Bad arguments and bad inputs raise the clear errors of the Keras layers
(enl_core.validation messages; ValueError / TypeError naming the argument)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import enl_core
import enl_torch

BLOCKS = [enl_torch.ENL, enl_torch.NonLocal]


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("value, error", [(0, ValueError), (-3, ValueError), (2.5, TypeError),
                                          (True, TypeError), ("8", TypeError)])
def test_bad_inter_channels(block, value, error):
    with pytest.raises(error, match="inter_channels"):
        block(8, inter_channels=value)


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("value, error", [(0, ValueError), (None, TypeError), (4.0, TypeError)])
def test_bad_in_channels(block, value, error):
    with pytest.raises(error, match="in_channels"):
        block(value)


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("value", [0, (9,), (9, 9, 9), (0, 3), (2.5, 3), "9x9", (True, 3)])
def test_bad_dct_size(block, value):
    with pytest.raises(ValueError, match="dct_size"):
        block(8, dct_size=value)


@pytest.mark.parametrize("value, error", [
    (np.ones((3, 3)), ValueError),   # shape != dct_size
    ([[1.0, np.nan]], ValueError),   # not finite
    ("ones", ValueError),            # an unknown string
    ({"a": 1}, TypeError),           # not array-like
])
def test_bad_dct_weights(value, error):
    with pytest.raises(error, match="dct_weights"):
        enl_torch.ENL(8, dct_size=(1, 2), dct_weights=value)


def test_dct_weights_need_position_encoding():
    with pytest.raises(ValueError, match="position_encoding"):
        enl_torch.ENL(8, position_encoding=False, dct_weights="learnable")


@pytest.mark.parametrize("name", ["position_encoding", "zero_init", "use_bias"])
def test_bad_flags(name):
    with pytest.raises(TypeError, match=name):
        enl_torch.ENL(8, **{name: 1})


def test_nonlocal_mode_and_position_combination():
    with pytest.raises(ValueError, match="mode"):
        enl_torch.NonLocal(8, mode="gaussian")
    with pytest.raises(ValueError, match="position_encoding"):
        enl_torch.NonLocal(8, mode="embedded_gaussian", position_encoding=True)
    with pytest.raises(ValueError, match="position_encoding"):
        enl_torch.NonLocal(8, mode="dot_product", sub_sample=True, position_encoding=True)
    with pytest.raises(ValueError, match="sub_sample"):
        enl_torch.NonLocal(8, sub_sample=True)(torch.randn(1, 8, 1, 5))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("scripted", [False, True])
def test_bad_inputs(block, scripted):
    module = block(8)
    if scripted:
        module = torch.jit.script(module)
        # TorchScript re-raises the same message inside torch.jit.Error.
        value_error = type_error = (ValueError, torch.jit.Error)
    else:
        value_error, type_error = ValueError, TypeError
    with pytest.raises(value_error, match=r"`inputs` .*rank 4.*\[2, 8, 5\]"):
        module(torch.randn(2, 8, 5))
    with pytest.raises(value_error, match=r"`inputs` .*C=8.*\[2, 7, 5, 5\]"):
        module(torch.randn(2, 7, 5, 5))
    # (TorchScript prints a dtype as its enum number.)
    dtype_name = "received dtype" if scripted else "int64"
    with pytest.raises(type_error, match=rf"`inputs` .*floating-point.*{dtype_name}"):
        module(torch.ones(2, 8, 5, 5, dtype=torch.int64))
    with pytest.raises(value_error, match="non-empty"):
        module(torch.randn(2, 8, 0, 5))


@pytest.mark.parametrize("block", BLOCKS)
def test_bad_attention_position(block):
    module = block(8)
    with pytest.raises(ValueError, match="position"):
        module.attention_map(torch.randn(1, 8, 4, 5), (4, 0))
    with pytest.raises(ValueError, match="position"):
        module.attention_map(torch.randn(1, 8, 4, 5), 20)


def test_bad_block_weights():
    module = enl_torch.ENL(8, 4)
    good = enl_core.init_params(8, 4)
    with pytest.raises(ValueError, match=r"\(8, 4\)"):
        module.set_block_weights(enl_core.init_params(8, 3))
    with pytest.raises(ValueError, match="missing"):
        module.set_block_weights({k: v for k, v in good.as_dict().items() if k != "g.bias"})
    with pytest.raises(TypeError, match="weights"):
        module.set_block_weights([1, 2])
    with pytest.raises(ValueError, match="use_bias"):
        enl_torch.ENL(8, 4, use_bias=False).set_block_weights(good)
    with pytest.raises(ValueError, match="dct_weights"):
        module.set_block_weights({**good.as_dict(), "dct_weights": np.full((9, 9), 2.0)})
