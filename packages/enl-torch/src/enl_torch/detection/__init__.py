"""ENL in torchvision's Faster / Mask R-CNN (Levi & Ullman, BMVC 2019, Sec. 4).

Modules:
    fpn: ``ENLFeaturePyramidNetwork``, blocks on the FPN top-down stream.
    backbones: ResNet / ResNeXt FPN backbones with the bottom-up NL placement.
    builders: ``fasterrcnn_enl_resnet_fpn`` / ``maskrcnn_enl_resnet_fpn``.
    weights: loading pretrained weights from local files.

Needs the ``detection`` extra (torchvision, pycocotools).
"""

from enl_torch.detection.backbones import BACKBONES, resnet_enl_fpn_backbone
from enl_torch.detection.builders import (
    MODEL_BUILDERS,
    VARIANT_LABELS,
    VARIANTS,
    fasterrcnn_enl_resnet_fpn,
    maskrcnn_enl_resnet_fpn,
)
from enl_torch.detection.fpn import (
    ChannelLayerNorm,
    ENLFeaturePyramidNetwork,
    NormalizedInputBlock,
    block_factory,
)

__all__ = [
    "BACKBONES",
    "MODEL_BUILDERS",
    "VARIANTS",
    "VARIANT_LABELS",
    "ChannelLayerNorm",
    "ENLFeaturePyramidNetwork",
    "NormalizedInputBlock",
    "block_factory",
    "fasterrcnn_enl_resnet_fpn",
    "maskrcnn_enl_resnet_fpn",
    "resnet_enl_fpn_backbone",
]
