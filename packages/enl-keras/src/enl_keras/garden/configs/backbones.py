"""Backbone configs: Model Garden's ResNet config plus one bottom-up NL block.

``Backbone`` extends Model Garden's ``backbones.Backbone`` one-of with a
``resnet_nl`` field (``task.model.backbone.type: resnet_nl``), the "+1NL, BU"
baseline of the paper's Tables 1 and 2 (after Wang et al., CVPR 2018).
"""

from __future__ import annotations

import dataclasses

from official.vision.configs import backbones


@dataclasses.dataclass
class ResNetNL(backbones.ResNet):
    """ResNet config plus the non-local block's place and width.

    Attributes:
        nl_level: stage (2..5) whose last residual block is preceded by the
            block; 4 (res4) as in Wang et al. and the paper.
        nl_inter_channels: C' of the block; None means C // 2.
        nl_scale: scale the embedded-Gaussian affinity by 1/sqrt(C').
    """

    nl_level: int = 4
    nl_inter_channels: int | None = None
    nl_scale: bool = True


@dataclasses.dataclass
class Backbone(backbones.Backbone):
    """Model Garden's backbone one-of plus ``resnet_nl``."""

    resnet_nl: ResNetNL = dataclasses.field(default_factory=ResNetNL)
