"""ENLFeaturePyramidNetwork: torchvision's FPN with blocks on the top-down stream.

The expected function is the coarse-to-fine recursion of ENL-SPEC ("Coarse-
to-fine placement") written out level by level with the module's own
sub-modules; the plain torchvision FPN is the reference when the blocks are
the identity (zero-initialised ``out``).
"""

from __future__ import annotations

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
