"""ENL-FPN: torchvision's FeaturePyramidNetwork with blocks on the top-down stream.

The paper's coarse-to-fine placement (Levi & Ullman 2019, Fig. 1, Sec. 4.1; docs/ENL-SPEC.md
"Coarse-to-fine placement"): the top-down stream computes ``P5 = lat(C5)``,
then ``P_l = lat(C_l) + upsample(P_{l+1})``. A block is applied to the merged
top-down feature of each chosen level *before* it is upsampled into the next
finer level, so each block sees what the coarser blocks passed down::

    last_inner = block_5(lat(C5))                          -> layer_5 -> P5
    last_inner = block_4(lat(C4) + up(last_inner))         -> layer_4 -> P4
    last_inner = block_3(lat(C3) + up(last_inner))         -> layer_3 -> P3
    last_inner =          lat(C2) + up(last_inner)         -> layer_2 -> P2

Everything else (lateral and output convolutions, their initialisation, the
``state_dict`` layout and its version upgrade, ``extra_blocks``) is
torchvision's, inherited: a torchvision FPN checkpoint loads into this module
with only the blocks' keys missing, and with the default zero-initialised
blocks the output equals torchvision's exactly.

``block_input_norm`` (off by default, which is the paper's placement) mirrors
the Model Garden decoder's option of the same name
(``enl_keras.garden.modeling.decoders.enl_fpn``): each block's branch sees a
normalised input, ``n = norm(x)``, ``z = x + (block(n) - n)``
(:class:`NormalizedInputBlock`). ENL's dot-product affinity is cubic in its
input and nothing normalises the merged top-down feature, so a chain of blocks
trained from scratch can amplify what the coarser block passes down until it
diverges; the norm bounds each block's input while the un-normalised stream
still flows on. With the zero-initialised ``out`` projection ``z == x``
exactly at initialisation, in training and in eval mode. ``block_norm`` picks
the norm, as the Keras decoder's option does: ``"batch"`` (the FPN's
``norm_layer``, else ``BatchNorm2d``) or ``"layer"`` (:class:`ChannelLayerNorm`,
a layer norm over the channels of each position: no running statistics, so
eval mode normalises as training does; batch norm's running statistics lag
behind training early on, and the cubic affinity amplifies the mismatch).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork

# Block names, norms, default levels and the level rule are framework-neutral
# (enl_core.fpn); the Model Garden decoder takes them from there too.
from enl_core.fpn import (
    BLOCK_TYPES,
    DEFAULT_BLOCK_LEVELS,
    check_block_levels,
    check_block_norm,
    check_levels,
)

BlockFactory = Callable[[int], nn.Module]


def block_factory(block: str | BlockFactory, block_kwargs: Mapping[str, Any] | None = None
                  ) -> BlockFactory:
    """Resolves ``block`` to a callable ``channels -> nn.Module``.

    Args:
        block: ``"enl"`` (:class:`enl_torch.ENL`), ``"nl"`` (:class:`enl_torch.NonLocal`
            with the embedded-Gaussian affinity, the paper's "NL" baseline) or a
            callable taking the channel count and returning an NCHW module that
            keeps the shape (residual included).
        block_kwargs: extra keyword arguments for ``ENL`` / ``NonLocal``
            (e.g. ``{"dct_size": (7, 7)}``); only with a string ``block``.

    Returns:
        The factory.

    Raises:
        ValueError: ``block`` is an unknown name.
        TypeError: ``block`` is neither a name nor callable, or ``block_kwargs``
            is given with a callable.

    Example::

        make = block_factory("enl", {"dct_size": 7})
        enl = make(256)
    """
    kwargs = dict(block_kwargs or {})
    if isinstance(block, str):
        if block not in BLOCK_TYPES:
            raise ValueError(f"`block` must be one of {BLOCK_TYPES} or a callable, "
                             f"received {block!r}")
        import enl_torch  # the blocks live in the package root; imported late to avoid a cycle

        if block == "enl":
            return lambda channels: enl_torch.ENL(channels, **kwargs)
        kwargs.setdefault("mode", "embedded_gaussian")
        return lambda channels: enl_torch.NonLocal(channels, **kwargs)
    if not callable(block):
        raise TypeError(f"`block` must be one of {BLOCK_TYPES} or a callable "
                        f"(channels) -> nn.Module, received {block!r}")
    if kwargs:
        raise TypeError(f"`block_kwargs` only applies to a named block ({BLOCK_TYPES}); "
                        f"received {kwargs!r} with block={block!r}")
    return block


def check_block_input_norm(block_input_norm, block_norm) -> None:
    """Raises naming ``block_input_norm`` (not a bool) or ``block_norm`` (not in
    :data:`enl_core.fpn.BLOCK_NORMS`); the FPN and the backbone builder share it."""
    if not isinstance(block_input_norm, bool):
        raise TypeError(f"`block_input_norm` must be a bool, received {block_input_norm!r} "
                        f"of type {type(block_input_norm).__name__}")
    check_block_norm(block_norm)


class ChannelLayerNorm(nn.LayerNorm):
    """Layer norm over the channels of each position of an NCHW map.

    ``nn.LayerNorm`` normalises trailing dimensions, so the map is moved to
    NHWC and back. The twin of ``tf_keras.layers.LayerNormalization(axis=-1)``
    on Model Garden's channels-last maps (``block_norm="layer"``).

    Args:
        channels: C.
        eps: added to the variance (``nn.LayerNorm``'s default).

    Example::

        norm = ChannelLayerNorm(64)
        y = norm(torch.randn(2, 64, 8, 8))   # every y[b, :, i, j] has mean 0, std 1
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        # F.layer_norm, not super().forward: TorchScript has no super() calls.
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                         self.eps)
        return y.permute(0, 3, 1, 2)


class NormalizedInputBlock(nn.Module):
    """``x + (block(n) - n)`` with ``n = norm(x)``: a block whose branch sees a normalised input.

    The block's own residual ``n + branch(n)`` is swapped for ``x + branch(n)``,
    so only the branch sees the normalised feature and a block that is the
    identity (zero-initialised ``out``) leaves ``x`` unchanged exactly. The
    Keras twin is ``apply_block`` of ``enl_keras.garden``'s ``ENLFPN`` with
    ``block_input_norm=True``.

    Args:
        block: a residual NCHW block (``enl_torch.ENL`` / ``NonLocal`` or any
            module that keeps the shape and includes its residual).
        norm: the norm applied to the block's input (e.g. ``nn.BatchNorm2d(C)``).

    Attributes:
        block, norm: the two children (``state_dict`` keys ``block.<block key>``
            and ``norm.<norm key>``).

    Example::

        wrapped = NormalizedInputBlock(enl_torch.ENL(64), nn.BatchNorm2d(64))
        y = wrapped(torch.randn(2, 64, 16, 16))   # == x at init (zero-initialised out)
    """

    def __init__(self, block: nn.Module, norm: nn.Module) -> None:
        super().__init__()
        for name, module in (("block", block), ("norm", norm)):
            if not isinstance(module, nn.Module):
                raise TypeError(f"`{name}` must be an nn.Module, received {module!r}")
        self.block = block
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        normed = self.norm(x)
        return x + (self.block(normed) - normed)


class ENLFeaturePyramidNetwork(FeaturePyramidNetwork):
    """FPN whose top-down stream applies ENL (or NL) blocks, coarse to fine.

    Levi & Ullman, "Efficient Coarse-to-Fine Non-Local Module for the Detection
    of Small Objects", BMVC 2019, Fig. 1 and Sec. 4.1 (three blocks along the top-down stream).

    Args:
        in_channels_list: channels of each input map, finest first (torchvision's).
        out_channels: FPN channels (the blocks run at this width).
        extra_blocks: torchvision's ``ExtraFPNBlock`` (e.g. ``LastLevelMaxPool``).
        norm_layer: norm of the lateral / output convolutions (torchvision's).
        levels: the pyramid level of each input map, finest first; default
            ``(2, 3, ...)``, torchvision's ResNet ``C2..C5`` (stride ``2**level``).
        block_levels: the levels that get a block (at least one: without blocks
            this is torchvision's FPN); default ``(5, 4, 3)``. Order does not
            matter: the stream always runs coarse to fine. Checked by
            :func:`enl_core.fpn.check_block_levels`, as the Model Garden
            decoder's ``block_levels`` are.
        block: ``"enl"``, ``"nl"`` or a factory ``(channels) -> nn.Module``.
        block_kwargs: keyword arguments for a named block.
        block_input_norm: wrap each block in :class:`NormalizedInputBlock`
            (``x + block(norm(x)) - norm(x)``), the norm being
            ``norm_layer(out_channels)`` when ``norm_layer`` is given, else
            ``nn.BatchNorm2d(out_channels)``, one per block level. Default False
            (the paper's placement); see the module docstring.
        block_norm: the norm of ``block_input_norm``: ``"batch"`` (default,
            as above) or ``"layer"`` (:class:`ChannelLayerNorm`).

    Attributes:
        top_down_blocks: ``nn.ModuleList`` aligned with the inputs; ``nn.Identity``
            where a level has no block (``state_dict`` keys
            ``top_down_blocks.<input index>.<block key>``; with
            ``block_input_norm`` the block sits one level deeper,
            ``top_down_blocks.<input index>.block.<block key>``, beside
            ``top_down_blocks.<input index>.norm.<norm key>``).

    Raises:
        ValueError / TypeError: naming the argument, e.g. a block level that is
            not among ``levels``.

    Example::

        fpn = ENLFeaturePyramidNetwork([256, 512, 1024, 2048], 256,
                                       extra_blocks=LastLevelMaxPool())
        features = fpn(OrderedDict(zip("0123", [c2, c3, c4, c5])))
    """

    def __init__(
        self,
        in_channels_list: list[int],
        out_channels: int,
        extra_blocks: ExtraFPNBlock | None = None,
        norm_layer: Callable[..., nn.Module] | None = None,
        *,
        levels: Sequence[int] | None = None,
        block_levels: Sequence[int] = DEFAULT_BLOCK_LEVELS,
        block: str | BlockFactory = "enl",
        block_kwargs: Mapping[str, Any] | None = None,
        block_input_norm: bool = False,
        block_norm: str = "batch",
    ) -> None:
        check_block_input_norm(block_input_norm, block_norm)
        super().__init__(in_channels_list, out_channels, extra_blocks, norm_layer)
        num_inputs = len(in_channels_list)
        levels = tuple(range(2, 2 + num_inputs)) if levels is None else check_levels(
            "levels", levels)
        if len(levels) != num_inputs:
            raise ValueError(f"`levels` must give one level per input map "
                             f"({num_inputs} in `in_channels_list`), received {levels!r}")
        if list(levels) != sorted(levels):
            raise ValueError(f"`levels` must be ordered finest first (increasing), "
                             f"received {levels!r}")
        block_levels = check_block_levels(block_levels, stream_levels=levels)
        make_block = block_factory(block, block_kwargs)
        self.levels = levels
        self.block_levels = block_levels
        self.block_input_norm = block_input_norm
        self.block_norm = block_norm
        if block_norm == "layer":
            make_norm = ChannelLayerNorm
        else:
            make_norm = norm_layer if norm_layer is not None else nn.BatchNorm2d

        def placed(level: int) -> nn.Module:
            if level not in block_levels:
                return nn.Identity()
            if block_input_norm:
                return NormalizedInputBlock(make_block(out_channels), make_norm(out_channels))
            return make_block(out_channels)

        self.top_down_blocks = nn.ModuleList(placed(level) for level in levels)

    def get_result_from_top_down_blocks(self, x: Tensor, idx: int) -> Tensor:
        """``self.top_down_blocks[idx](x)``, written like torchvision's
        ``get_result_from_inner_blocks`` so that the module stays scriptable."""
        num_blocks = len(self.top_down_blocks)
        if idx < 0:
            idx += num_blocks
        out = x
        for i, module in enumerate(self.top_down_blocks):
            if i == idx:
                out = module(x)
        return out

    def forward(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        """Computes the pyramid; same inputs and outputs as torchvision's FPN.

        torchvision's ``forward`` has no hook between the top-down merge and the
        upsample, which is where the block must sit, so the loop is restated
        here with that one call added; every module it calls is the parent's.
        """
        names = list(x.keys())
        features = list(x.values())
        if len(features) != len(self.inner_blocks):
            raise ValueError(f"the FPN expects {len(self.inner_blocks)} feature maps "
                             f"(levels {self.levels}), received {len(features)}: {names}")

        last_inner = self.get_result_from_inner_blocks(features[-1], -1)
        last_inner = self.get_result_from_top_down_blocks(last_inner, -1)
        results = [self.get_result_from_layer_blocks(last_inner, -1)]

        for idx in range(len(features) - 2, -1, -1):
            inner_lateral = self.get_result_from_inner_blocks(features[idx], idx)
            feat_shape = inner_lateral.shape[-2:]
            inner_top_down = F.interpolate(last_inner, size=feat_shape, mode="nearest")
            # The block sees the merged feature and its output is what the next,
            # finer level upsamples (coarse to fine).
            last_inner = self.get_result_from_top_down_blocks(inner_lateral + inner_top_down, idx)
            results.insert(0, self.get_result_from_layer_blocks(last_inner, idx))

        if self.extra_blocks is not None:
            results, names = self.extra_blocks(results, features, names)

        # (indexing, not zip: TorchScript has no zip(strict=...))
        return OrderedDict([(names[i], results[i]) for i in range(len(results))])

    def extra_repr(self) -> str:
        return (f"levels={self.levels}, block_levels={self.block_levels}, "
                f"block_input_norm={self.block_input_norm}, block_norm={self.block_norm!r}")
