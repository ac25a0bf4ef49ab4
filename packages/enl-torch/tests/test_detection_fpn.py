"""ENLFeaturePyramidNetwork: torchvision's FPN with blocks on the top-down stream.

The expected function is the coarse-to-fine recursion of docs/ENL-SPEC.md ("Coarse-
to-fine placement") written out level by level with the module's own
sub-modules; the plain torchvision FPN is the reference when the blocks are
the identity (zero-initialised ``out``).
"""

from __future__ import annotations

import functools
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

import enl_torch
from enl_core.testing import assert_close
from enl_torch.detection import ENLFeaturePyramidNetwork, block_factory
from enl_torch.detection.fpn import ChannelLayerNorm, NormalizedInputBlock

IN_CHANNELS = [8, 16, 32, 64]  # C2..C5
OUT_CHANNELS = 16
LEVELS = (2, 3, 4, 5)


def features(seed: int = 0, size: int = 32, dtype=torch.float64) -> OrderedDict:
    generator = torch.Generator().manual_seed(seed)
    return OrderedDict(
        (str(i), torch.randn(2, c, size >> i, (size + 8) >> i, generator=generator, dtype=dtype))
        for i, c in enumerate(IN_CHANNELS))


def make_fpn(**kwargs) -> ENLFeaturePyramidNetwork:
    torch.manual_seed(0)
    return ENLFeaturePyramidNetwork(IN_CHANNELS, OUT_CHANNELS, LastLevelMaxPool(),
                                    **kwargs).double()


def expected_fpn(fpn: ENLFeaturePyramidNetwork, x: OrderedDict) -> list[torch.Tensor]:
    """P_l = layer_l(T_l), T_5 = block_5(lat(C5)), T_l = block_l(lat(C_l) + up(T_{l+1}))."""
    maps = dict(zip(LEVELS, x.values(), strict=True))
    index = {level: i for i, level in enumerate(LEVELS)}
    top_down, outputs = None, {}
    for level in sorted(LEVELS, reverse=True):
        i = index[level]
        merged = fpn.inner_blocks[i](maps[level])
        if top_down is not None:
            merged = merged + F.interpolate(top_down, size=merged.shape[-2:], mode="nearest")
        top_down = fpn.top_down_blocks[i](merged)
        outputs[level] = fpn.layer_blocks[i](top_down)
    pyramid = [outputs[level] for level in LEVELS]
    return pyramid + [F.max_pool2d(pyramid[-1], kernel_size=1, stride=2)]


@pytest.mark.parametrize("block", ["enl", "nl"])
@pytest.mark.parametrize("block_levels", [(5, 4, 3), (4, 3, 2), (5,), (3, 5)])
def test_matches_the_coarse_to_fine_recursion(block, block_levels):
    fpn = make_fpn(block=block, block_levels=block_levels, block_kwargs={"zero_init": False})
    x = features(seed=len(block_levels))
    with torch.no_grad():
        actual = list(fpn(x).values())
        expected = expected_fpn(fpn, x)
    assert list(fpn(x).keys()) == ["0", "1", "2", "3", "pool"]
    for a, e in zip(actual, expected, strict=True):
        assert_close(a, e, "float64")
    kinds = {enl_torch.ENL: "enl", enl_torch.NonLocal: "nl"}
    placed = {level for level, module in zip(LEVELS, fpn.top_down_blocks, strict=True)
              if kinds.get(type(module)) == block}
    assert placed == set(block_levels)
    assert fpn.block_levels == tuple(sorted(block_levels, reverse=True))


def test_identity_blocks_equal_torchvision_fpn():
    """Zero-initialised blocks are the identity: the torchvision FPN's weights give
    the torchvision FPN's output, and its state dict lacks only the blocks."""
    fpn = make_fpn()
    plain = FeaturePyramidNetwork(IN_CHANNELS, OUT_CHANNELS, LastLevelMaxPool()).double()
    result = fpn.load_state_dict(plain.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all(k.startswith("top_down_blocks.")
                                       for k in result.missing_keys)
    x = features(seed=3)
    with torch.no_grad():
        for a, e in zip(fpn(x).values(), plain(x).values(), strict=True):
            assert torch.equal(a, e)


def test_coarse_blocks_reach_finer_levels_only_downwards():
    """A block at P5 changes every finer level; a block at P3 leaves P4 and P5 alone."""
    x = features(seed=4)
    base = make_fpn(block_levels=())
    with torch.no_grad():
        reference = base(x)
        for level, changed in ((5, {"0", "1", "2", "3"}), (3, {"0", "1"})):
            fpn = make_fpn(block_levels=(level,), block_kwargs={"zero_init": False})
            fpn.load_state_dict(base.state_dict(), strict=False)
            output = fpn(x)
            differs = {k for k in ("0", "1", "2", "3")
                       if not torch.allclose(output[k], reference[k])}
            assert differs == changed, (level, differs)


def test_gradients_reach_every_block():
    fpn = make_fpn(block="enl", block_kwargs={"zero_init": False})
    sum(v.sum() for v in fpn(features(seed=5)).values()).backward()
    for i, level in enumerate(LEVELS):
        block = fpn.top_down_blocks[i]
        if level in (5, 4, 3):
            assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0
                       for p in block.parameters()), level


def test_block_factory_callable_and_kwargs():
    made = []

    def factory(channels):
        made.append(channels)
        return nn.Identity()

    make_fpn(block=factory, block_levels=(5, 4))
    assert made == [OUT_CHANNELS, OUT_CHANNELS]
    enl = block_factory("enl", {"dct_size": 5, "inter_channels": 4})(OUT_CHANNELS)
    assert isinstance(enl, enl_torch.ENL) and enl.dct_size == (5, 5) and enl.inter_channels == 4
    nl = block_factory("nl")(OUT_CHANNELS)
    assert isinstance(nl, enl_torch.NonLocal) and nl.mode == "embedded_gaussian"


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_scriptable_and_same_output():
    fpn = make_fpn(block_kwargs={"zero_init": False})
    x = features(seed=6)
    scripted = torch.jit.script(fpn)
    with torch.no_grad():
        for a, e in zip(scripted(x).values(), fpn(x).values(), strict=True):
            assert_close(a, e, "float64")


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"block": "gcnet"}, ValueError, "`block` must be one of"),
    ({"block": 3}, TypeError, "`block` must be one of"),
    ({"block": lambda c: nn.Identity(), "block_kwargs": {"dct_size": 3}}, TypeError,
     "`block_kwargs`"),
    ({"block_levels": (6,)}, ValueError, "`block_levels` must be among the input levels"),
    ({"block_levels": (5, 5)}, ValueError, "`block_levels` must not repeat"),
    ({"block_levels": "543"}, TypeError, "`block_levels` must be a sequence"),
    ({"levels": (2, 3, 4)}, ValueError, "`levels` must give one level per input"),
    ({"levels": (5, 4, 3, 2)}, ValueError, "`levels` must be ordered finest first"),
    ({"block_kwargs": {"dct_size": 0}}, ValueError, "dct_size"),
    ({"block_input_norm": 1}, TypeError, "`block_input_norm` must be a bool, received 1"),
    ({"block_input_norm": "yes"}, TypeError, "`block_input_norm` must be a bool"),
    ({"block_input_norm": True, "block_norm": "group"}, ValueError,
     "`block_norm` must be one of .*received 'group'"),
])
def test_bad_arguments_raise_naming_them(kwargs, error, match):
    with pytest.raises(error, match=match):
        ENLFeaturePyramidNetwork(IN_CHANNELS, OUT_CHANNELS, **kwargs)


def test_wrong_number_of_inputs_raises():
    fpn = make_fpn()
    x = features()
    del x["0"]
    with pytest.raises(ValueError, match="expects 4 feature maps"):
        fpn(x)


# --- block_input_norm: x + (block(n) - n), n = norm(x) ----------------------------

def _batch_norm_by_hand(x: torch.Tensor, norm: nn.BatchNorm2d) -> torch.Tensor:
    """BatchNorm2d written out: batch statistics (biased variance) in training,
    running statistics in eval."""
    if norm.training:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    else:
        mean = norm.running_mean.view(1, -1, 1, 1)
        var = norm.running_var.view(1, -1, 1, 1)
    scale = norm.weight.view(1, -1, 1, 1) / torch.sqrt(var + norm.eps)
    return (x - mean) * scale + norm.bias.view(1, -1, 1, 1)


@pytest.mark.parametrize("training", [True, False])
def test_block_input_norm_feeds_only_the_branch_a_normalised_input(training):
    """Each level computes x + (ENL(n) - n), n = BN(x), from the FPN's merged feature."""
    fpn = make_fpn(block_input_norm=True, block_kwargs={"zero_init": False})
    with torch.no_grad():  # non-trivial norm parameters and running statistics
        for module in fpn.top_down_blocks:
            if isinstance(module, NormalizedInputBlock):
                module.norm.weight.uniform_(0.5, 1.5)
                module.norm.bias.uniform_(-0.5, 0.5)
                module.norm.running_mean.uniform_(-0.5, 0.5)
                module.norm.running_var.uniform_(0.5, 2.0)
    fpn.train(training)
    x = torch.randn(2, OUT_CHANNELS, 8, 10, dtype=torch.float64)
    for level, module in zip(LEVELS, fpn.top_down_blocks, strict=True):
        if level not in (5, 4, 3):
            assert isinstance(module, nn.Identity)
            continue
        assert isinstance(module, NormalizedInputBlock)
        assert isinstance(module.block, enl_torch.ENL) and isinstance(module.norm, nn.BatchNorm2d)
        normed = _batch_norm_by_hand(x, module.norm)
        with torch.no_grad():
            expected = x + (module.block(normed) - normed)
            actual = module(x)
        assert_close(actual, expected, "float64")
        assert not torch.allclose(actual, module.block(x).detach())  # the norm matters
    # The whole pyramid is the coarse-to-fine recursion with these wrapped blocks.
    inputs = features(seed=7)
    with torch.no_grad():
        for a, e in zip(fpn(inputs).values(), expected_fpn(fpn, inputs), strict=True):
            assert_close(a, e, "float64")


@pytest.mark.parametrize("block_norm", ["batch", "layer"])
@pytest.mark.parametrize("training", [True, False])
def test_block_input_norm_at_init_equals_torchvision_fpn(training, block_norm):
    """Zero-initialised ``out``: block(n) - n == 0 exactly, so the pyramid is
    torchvision's in training mode (batch statistics) and in eval mode."""
    fpn = make_fpn(block_input_norm=True, block_norm=block_norm)
    plain = FeaturePyramidNetwork(IN_CHANNELS, OUT_CHANNELS, LastLevelMaxPool()).double()
    result = fpn.load_state_dict(plain.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all(k.startswith("top_down_blocks.")
                                       for k in result.missing_keys)
    fpn.train(training)
    plain.train(training)
    x = features(seed=8)
    with torch.no_grad():
        for a, e in zip(fpn(x).values(), plain(x).values(), strict=True):
            assert torch.equal(a, e)


def test_block_input_norm_state_dict_keys():
    """Blocks move one level down (``.block.``) beside their norm (``.norm.``)."""
    keys = set(make_fpn(block_input_norm=True).state_dict())
    plain_keys = set(make_fpn().state_dict())
    for index in (1, 2, 3):  # levels 3, 4, 5
        assert f"top_down_blocks.{index}.block.theta.weight" in keys
        assert f"top_down_blocks.{index}.theta.weight" not in keys
        assert f"top_down_blocks.{index}.theta.weight" in plain_keys
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            assert f"top_down_blocks.{index}.norm.{name}" in keys
    assert not any(k.startswith("top_down_blocks.0.") for k in keys)


def test_block_input_norm_gradients_reach_the_block_and_its_norm():
    # Zero-initialised: the out projection is what learns first.
    fpn = make_fpn(block_input_norm=True)
    sum(v.sum() for v in fpn(features(seed=9)).values()).backward()
    for index in (1, 2, 3):
        grad = fpn.top_down_blocks[index].block.out.weight.grad
        assert grad is not None and torch.count_nonzero(grad) > 0, index
    # Trained blocks: every parameter of the block and of its norm gets a gradient.
    fpn = make_fpn(block_input_norm=True, block_kwargs={"zero_init": False})
    sum((v ** 2).sum() for v in fpn(features(seed=9)).values()).backward()
    for index in (1, 2, 3):
        wrapped = fpn.top_down_blocks[index]
        for name, p in wrapped.named_parameters():
            assert p.grad is not None and torch.count_nonzero(p.grad) > 0, (index, name)


def test_block_input_norm_uses_the_fpn_norm_layer():
    group_norm = functools.partial(nn.GroupNorm, 4)
    fpn = make_fpn(norm_layer=group_norm, block_input_norm=True, block="nl")
    wrapped = [m for m in fpn.top_down_blocks if isinstance(m, NormalizedInputBlock)]
    assert len(wrapped) == 3
    for module in wrapped:
        assert isinstance(module.norm, nn.GroupNorm)
        assert (module.norm.num_groups, module.norm.num_channels) == (4, OUT_CHANNELS)
        assert isinstance(module.block, enl_torch.NonLocal)
    assert "block_input_norm=True" in repr(fpn)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("training", [True, False])
def test_block_input_norm_scriptable_and_same_output(training):
    fpn = make_fpn(block_input_norm=True, block_kwargs={"zero_init": False}).train(training)
    x = features(seed=10)
    scripted = torch.jit.script(fpn)
    with torch.no_grad():
        for a, e in zip(scripted(x).values(), fpn(x).values(), strict=True):
            assert_close(a, e, "float64")


def test_normalized_input_block_rejects_non_modules():
    with pytest.raises(TypeError, match="`norm` must be an nn.Module"):
        NormalizedInputBlock(nn.Identity(), "batch")


# --- block_norm="layer": a layer norm over channels, no running statistics ---------

def test_channel_layer_norm_normalises_each_position_over_channels():
    norm = ChannelLayerNorm(OUT_CHANNELS).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, OUT_CHANNELS, 5, 7, dtype=torch.float64) * 10.0 + 4.0
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, unbiased=False, keepdim=True)
    expected = ((x - mean) / torch.sqrt(var + norm.eps) * norm.weight.view(1, -1, 1, 1)
                + norm.bias.view(1, -1, 1, 1))
    with torch.no_grad():
        assert_close(norm.train()(x), expected, "float64")
        assert_close(norm.eval()(x), expected, "float64")  # no running statistics
    assert set(norm.state_dict()) == {"weight", "bias"}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("training", [True, False])
def test_layer_block_norm_wraps_every_block_and_scripts(training):
    fpn = make_fpn(block_input_norm=True, block_norm="layer")
    wrapped = [m for m in fpn.top_down_blocks if isinstance(m, NormalizedInputBlock)]
    assert len(wrapped) == 3 and all(isinstance(m.norm, ChannelLayerNorm) for m in wrapped)
    assert "block_norm='layer'" in repr(fpn)
    x = features(seed=11)
    trained = make_fpn(block_input_norm=True, block_norm="layer",
                       block_kwargs={"zero_init": False}).train(training)
    scripted = torch.jit.script(trained)
    with torch.no_grad():
        for a, e in zip(scripted(x).values(), trained(x).values(), strict=True):
            assert_close(a, e, "float64")
