"""Bad arguments and bad inputs raise the clear errors of the Keras layers
(enl_core.validation messages; ValueError / TypeError naming the argument)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch_block_cases import ShapeRecorder

import enl_core
import enl_core.blocks
import enl_core.cost
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


# --- generated bad values: each error names the argument and the value -----------

BAD_INTS = st.one_of(st.integers(max_value=0), st.booleans(),
                     st.floats(allow_nan=False), st.text(max_size=3), st.none())


def _names(error: pytest.ExceptionInfo, name: str, value) -> None:
    message = str(error.value)
    assert f"`{name}`" in message and repr(value) in message, message


@pytest.mark.parametrize("block", BLOCKS)
@given(value=BAD_INTS)
def test_generated_bad_inter_channels(block, value):
    if value is None:
        return  # None is the default: max(C // 2, 1)
    with pytest.raises((TypeError, ValueError)) as error:
        block(8, inter_channels=value)
    _names(error, "inter_channels", value)


@pytest.mark.parametrize("block", BLOCKS)
@given(value=BAD_INTS)
def test_generated_bad_in_channels(block, value):
    with pytest.raises((TypeError, ValueError)) as error:
        block(value)
    _names(error, "in_channels", value)


bad_dct_sizes = st.one_of(
    st.integers(max_value=0), st.booleans(), st.floats(), st.text(max_size=4),
    st.tuples(st.integers(max_value=0), st.integers(1, 9)),
    st.tuples(st.integers(1, 9), st.floats(allow_nan=False)),
    st.lists(st.integers(1, 9), min_size=3, max_size=4).map(tuple))


@pytest.mark.parametrize("block", BLOCKS)
@given(value=bad_dct_sizes)
def test_generated_bad_dct_size(block, value):
    with pytest.raises(ValueError) as error:
        block(8, dct_size=value)
    assert "`dct_size`" in str(error.value) and repr(value) in str(error.value)


@pytest.mark.parametrize("name", ["position_encoding", "zero_init", "use_bias"])
@given(value=st.one_of(st.integers(), st.text(max_size=3), st.none(), st.floats()))
def test_generated_bad_flags(name, value):
    with pytest.raises(TypeError) as error:
        enl_torch.ENL(8, **{name: value})
    _names(error, name, value)


@given(value=st.text(max_size=12).filter(lambda mode: mode not in enl_core.blocks.NL_MODES))
def test_generated_bad_nonlocal_mode(value):
    with pytest.raises(ValueError) as error:
        enl_torch.NonLocal(8, mode=value)
    _names(error, "mode", value)


@given(real=st.floats(-3, 3), imaginary=st.floats(0.001, 3),
       kind=st.sampled_from(["numpy", "tensor", "scalar"]))
def test_complex_dct_weights_are_refused(real, imaginary, kind):
    """float64 would keep only the real part."""
    value = {"numpy": np.full((2, 3), complex(real, imaginary)),
             "tensor": torch.full((2, 3), complex(real, imaginary)),
             "scalar": complex(real, imaginary)}[kind]
    with pytest.raises(TypeError, match="`dct_weights` must be real, received complex"):
        enl_torch.ENL(8, dct_size=(2, 3), dct_weights=value)


def test_dct_weights_tensor_with_requires_grad_is_copied_and_detached():
    values = torch.rand(2, 3, dtype=torch.float64) + 0.5
    given_weights = values.clone().requires_grad_()
    module = enl_torch.ENL(8, dct_size=(2, 3), dct_weights=given_weights, zero_init=False)
    assert not module.dct_weights.requires_grad
    assert torch.equal(module.dct_weights, values.float())
    reference = enl_torch.ENL(8, dct_size=(2, 3), dct_weights=values.numpy(), zero_init=False)
    reference.load_state_dict(module.state_dict())
    x = torch.randn(1, 8, 4, 5)
    module(x).sum().backward()
    assert given_weights.grad is None  # nothing flows back into the caller's tensor
    assert torch.equal(module(x), reference(x))
    # bfloat16 tensors (no numpy dtype) are accepted too.
    enl_torch.ENL(8, dct_size=(2, 3), dct_weights=values.to(torch.bfloat16))


@pytest.mark.parametrize("block", BLOCKS)
@given(position=st.one_of(
    st.tuples(st.floats(0, 3).filter(lambda v: not float(v).is_integer()), st.integers(0, 3)),
    st.tuples(st.integers(0, 3), st.floats(0, 3).filter(lambda v: not float(v).is_integer())),
    st.floats(0, 15).filter(lambda v: not float(v).is_integer()),
    st.booleans(), st.text(max_size=2), st.tuples(st.booleans(), st.integers(0, 3))))
def test_non_integer_attention_positions_are_refused(block, position):
    """(1.5, 2) used to be truncated to (1, 2)."""
    module = block(8)
    with pytest.raises(ValueError) as error:
        module.attention_map(torch.randn(1, 8, 4, 4), position)
    _names(error, "position", position)


def test_integer_scalars_of_any_kind_are_positions():
    module = enl_torch.ENL(8)
    x = torch.randn(1, 8, 4, 4)
    expected = module.attention_map(x, (1, 2))
    for position in [(np.int64(1), np.int32(2)), (torch.tensor(1), 2), 6, np.int16(6)]:
        assert torch.equal(module.attention_map(x, position), expected)


@pytest.mark.parametrize("block", BLOCKS)
@given(shape=st.one_of(st.tuples(st.integers(1, 2), st.just(8), st.just(0), st.integers(0, 3)),
                       st.tuples(st.integers(1, 2), st.just(8), st.integers(0, 3), st.just(0))))
def test_empty_grids_are_refused_naming_the_shape(block, shape):
    with pytest.raises(ValueError) as error:
        block(8)(torch.randn(*shape))
    assert "`inputs`" in str(error.value) and str(list(shape)) in str(error.value)


@pytest.mark.parametrize("block", BLOCKS)
@given(dtype=st.sampled_from([torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8,
                              torch.bool, torch.complex64]))
def test_non_floating_inputs_are_refused_naming_the_dtype(block, dtype):
    """A clear TypeError, never torch's NotImplementedError from a kernel."""
    with pytest.raises(TypeError, match=rf"`inputs` .*floating-point.*{dtype}"):
        block(8)(torch.zeros(1, 8, 3, 3, dtype=dtype))


def test_integer_modules_are_refused():
    with pytest.raises(TypeError, match="dtype"):
        enl_torch.ENL(8).to(torch.int32)
    with pytest.raises(TypeError, match="dtype"):
        enl_torch.ENL(8, dtype=torch.float64)  # no dtype argument: cast with .to()


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("runner", ["eager", "script", "compile"])
@pytest.mark.parametrize("shape", [(1, 8, 1, 5), (2, 8, 6, 1), (1, 8, 1, 1)])
def test_sub_sample_needs_two_by_two_at_forward(runner, shape):
    """Checked when the grid is known (forward), in every execution mode."""
    module = enl_torch.NonLocal(8, sub_sample=True)
    if runner == "script":
        module = torch.jit.script(module)
    elif runner == "compile":
        torch._dynamo.reset()
        module = torch.compile(module, backend="aot_eager", dynamic=True)
    errors = (ValueError, torch.jit.Error) if runner == "script" else ValueError
    with pytest.raises(errors, match=rf"`sub_sample` needs H, W >= 2, received shape "
                                     rf"{re.escape(str(list(shape)))}"):
        module(torch.randn(*shape))
    module(torch.randn(1, 8, 2, 3))  # the smallest grid it takes


# --- dct_size beyond the grid, an affinity too large to allocate -------------------

@pytest.mark.parametrize("block, kwargs", [
    (enl_torch.ENL, {}), (enl_torch.ENL, {"dct_weights": "learnable"}),
    (enl_torch.NonLocal, {"mode": "dot_product", "position_encoding": True})])
def test_dct_size_is_clamped_before_any_basis_is_built(block, kwargs):
    """A 6 x 5 grid holds 6 x 5 frequencies: dct_size (3000, 2000) computes what
    (6, 5) computes, and no tensor of any op is larger than the (6, 5) run's
    (it used to build 3000- and 2000-column bases and a 3000 x 2000 product)."""
    torch.manual_seed(0)
    huge = block(8, dct_size=(3000, 2000), zero_init=False, **kwargs)
    torch.manual_seed(0)
    fitting = block(8, dct_size=(6, 5), zero_init=False, **kwargs)
    state = {k: v[:6, :5] if k == "dct_weights" else v for k, v in huge.state_dict().items()}
    fitting.load_state_dict(state)
    x = torch.randn(2, 8, 6, 5)
    recorded = {}
    for name, module in (("huge", huge), ("fitting", fitting)):
        recorder = ShapeRecorder()
        with recorder:
            z = module(x)
        # Every tensor an op reads or writes, but the (3000, 2000) d itself (a
        # parameter of that shape is what the user asked for; it is only cropped).
        shapes = [s for c in recorder.calls for s in c.shapes if s != (3000, 2000)]
        recorded[name] = (z, max(int(np.prod(s)) for s in shapes),
                          max(max(s, default=0) for s in shapes))
    assert torch.equal(recorded["huge"][0], recorded["fitting"][0])
    assert recorded["huge"][1] == recorded["fitting"][1]
    assert recorded["huge"][2] < 100  # no dimension of 2000 or 3000 anywhere
    if kwargs.get("dct_weights") == "learnable":
        recorded["huge"][0].sum().backward()
        grad = huge.dct_weights.grad
        assert grad.shape == (3000, 2000) and torch.count_nonzero(grad[6:]) == 0
        assert torch.count_nonzero(grad[:, 5:]) == 0 and torch.count_nonzero(grad[:6, :5]) > 0


def test_attention_map_clamps_dct_size_too():
    torch.manual_seed(0)
    huge = enl_torch.ENL(8, dct_size=(5000, 5000), zero_init=False)
    fitting = enl_torch.ENL(8, dct_size=(4, 3), zero_init=False)
    fitting.load_state_dict(huge.state_dict())
    x = torch.randn(1, 8, 4, 3)
    recorder = ShapeRecorder()
    with recorder:
        row = huge.attention_map(x, (1, 2))
    assert torch.equal(row, fitting.attention_map(x, (1, 2)))
    assert max(max(s, default=0) for c in recorder.calls for s in c.shapes) < 100


@pytest.mark.parametrize("mode, sub_sample, keys", [
    ("embedded_gaussian", False, 2**20), ("dot_product", False, 2**20),
    ("embedded_gaussian", True, 2**18)])
def test_an_affinity_too_large_to_allocate_is_named(mode, sub_sample, keys):
    """N = 2**20 positions: the (1, N, N') float32 affinity is 4 TiB (1 TiB
    sub-sampled), which the allocator refuses at once; the error says which
    block, which tensor and how many bytes enl_core.cost predicts."""
    n = 2**20
    predicted = enl_core.cost.block_cost(1024, 1024, 1, 1, kind=f"nl_{mode}",
                                         sub_sample=sub_sample).affinity_floats * 4
    assert predicted == n * keys * 4
    module = enl_torch.NonLocal(1, mode=mode, sub_sample=sub_sample)
    with torch.no_grad(), pytest.raises(RuntimeError) as error:
        module(torch.randn(1, 1, 1024, 1024))
    message = str(error.value)
    assert f"NonLocal cannot allocate its (B, N, N') = (1, {n}, {keys}) affinity" in message
    assert f"{predicted} bytes" in message and "1024x1024" in message
    assert "ENL" in message and "allocate" in message
