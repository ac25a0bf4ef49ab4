"""Decoder configs: Model Garden's FPN config plus the top-down (E)NL blocks.

``Decoder`` extends Model Garden's ``decoders.Decoder`` one-of with an
``enl_fpn`` field, so a YAML file or ``--params_override`` selects the decoder
with ``task.model.decoder.type: enl_fpn`` exactly as it selects ``fpn``.

Paper: Levi & Ullman, "Efficient Coarse-to-Fine Non-Local Module for the
Detection of Small Objects", BMVC 2019, Sec. 3.3 and 4.1 ("+3ENL, TD").
"""

from __future__ import annotations

import dataclasses

from official.vision.configs import decoders

from enl_core.fpn import DEFAULT_BLOCK_LEVELS, check_block, check_block_levels, check_block_norm
from enl_keras.garden.modeling.decoders.checks import check_bool, check_dct_size, check_enl_only


@dataclasses.dataclass
class ENLFPN(decoders.FPN):
    """FPN config plus the blocks on the merged top-down features.

    Attributes:
        block_levels: FPN levels that get a block, applied coarse to fine
            (5, 4, 3 in the paper). Each must lie in [model.min_level, backbone
            max level]; checked when the model is built (the model's levels
            are not known here). The same name and rule as in
            ``enl_torch.detection`` (:func:`enl_core.fpn.check_block_levels`).
        block: "enl" (the paper's ENL) or "nl" (embedded-Gaussian non-local,
            the "+3NL, TD" row of the cost table).
        inter_channels: C' of every block; None means num_filters // 2.
        dct_size: (kH, kW) low DCT frequencies of the position term; None
            means (9, 9) for ENL. ENL only: set for ``block: nl``, it raises.
        position_encoding: ENL's relative-position term (eq. 9); None means
            True for ENL. ENL only: set for ``block: nl``, it raises.
        block_input_norm: a bool (a quoted 'false' is rejected, naming the
            field): each block's branch sees a normalised input,
            ``x + block(norm(x)) - norm(x)``; off (the paper's placement) by
            default. ENL's affinity is cubic in its input, so from scratch the
            un-normalised coarse-to-fine stack can diverge.
        block_norm: that norm: "batch" (the FPN's batch norm) or "layer"
            (layer norm over channels; no running statistics, so inference
            normalises as training does).
        levels: deprecated name of ``block_levels`` (None: unset). When set,
            it is used in place of ``block_levels`` with a
            ``DeprecationWarning``; setting both to different lists fails.
    """

    block_levels: list[int] = dataclasses.field(
        default_factory=lambda: list(DEFAULT_BLOCK_LEVELS))
    block: str = "enl"
    inter_channels: int | None = None
    dct_size: list[int] | None = None
    position_encoding: bool | None = None
    block_input_norm: bool = False
    block_norm: str = "batch"
    levels: list[int] | None = None

    def __post_init__(self, *args, **kwargs):
        super().__post_init__(*args, **kwargs)
        # Fails when the config is built (a typo in a factory or a dict);
        # YAML overrides applied later are checked again when the model is built.
        check_block(self.block)
        check_block_norm(self.block_norm)
        check_enl_only(self.block, self.position_encoding, self.dct_size)
        if self.dct_size is not None:
            check_dct_size(self.dct_size)
        if self.position_encoding is not None:
            check_bool("position_encoding", self.position_encoding)
        check_bool("block_input_norm", self.block_input_norm)
        check_block_levels(self.block_levels)
        if self.levels is not None:
            check_block_levels(self.levels, name="levels")


@dataclasses.dataclass
class Decoder(decoders.Decoder):
    """Model Garden's decoder one-of plus ``enl_fpn``."""

    enl_fpn: ENLFPN = dataclasses.field(default_factory=ENLFPN)
