"""How far the baseline detector can see: the theoretical receptive field of its features.

The receptive field (RF) of a stack of convolutions and poolings grows as
``rf += (kernel - 1) * jump`` and ``jump *= stride`` per layer (Araujo et al.,
Distill 2019, "Computing receptive fields of convolutional neural networks").
This module applies that rule to Model Garden's ResNet (stem ``v0``: a 7x7
stride-2 convolution and a 3x3 stride-2 max pool; ``residual`` blocks of two
3x3 convolutions with the stride on the first, ``bottleneck`` blocks of 1x1,
3x3 (strided), 1x1) and its FPN (1x1 laterals; the top-down sum reaches every
level with the RF of C5, since nearest upsampling adds none; a 3x3 output
convolution per level), plus the RPN head's 3x3 convolution.

A feature at level ``l`` sees nothing farther than ``rf / 2`` from its centre;
a small object's RoI (pooled from P2 for objects under 112 px) sees at most its
own half size plus that. The strip dataset places deciding objects up to its
width away, beyond this reach for its far half (README, main-job section); the
flip rate against distance (``context_reach.png``) measures what the trained
models actually use.

Example:
    >>> theoretical_reach(18)["P2"]["radius"]
    225.5
"""

from __future__ import annotations

# Model Garden's official/vision/modeling/backbones/resnet.py RESNET_SPECS:
# (block type, blocks per stage res2..res5).
RESNET_BLOCKS = {
    10: ("residual", (1, 1, 1, 1)),
    18: ("residual", (2, 2, 2, 2)),
    26: ("bottleneck", (2, 2, 2, 2)),
    34: ("residual", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


def _grow(rf: int, jump: int, kernel: int, stride: int) -> tuple[int, int]:
    return rf + (kernel - 1) * jump, jump * stride


def backbone_receptive_fields(model_id: int) -> dict[str, dict[str, int]]:
    """``{"C2".."C5": {"rf": px, "stride": px}}`` of Model Garden's ResNet-``model_id``.

    Raises:
        ValueError: naming `model_id` and the value received.
    """
    if model_id not in RESNET_BLOCKS:
        raise ValueError(f"`model_id` must be one of {sorted(RESNET_BLOCKS)}, "
                         f"received {model_id!r}")
    block, counts = RESNET_BLOCKS[model_id]
    rf, jump = _grow(1, 1, 7, 2)  # stem conv
    rf, jump = _grow(rf, jump, 3, 2)  # stem max pool
    fields = {}
    for stage, count in enumerate(counts):
        for index in range(count):
            stride = 2 if stage > 0 and index == 0 else 1
            if block == "residual":
                rf, jump = _grow(rf, jump, 3, stride)
                rf, jump = _grow(rf, jump, 3, 1)
            else:  # 1x1 convolutions add nothing
                rf, jump = _grow(rf, jump, 3, stride)
        fields[f"C{stage + 2}"] = {"rf": rf, "stride": jump}
    return fields


def theoretical_reach(model_id: int = 18, min_level: int = 2,
                      max_level: int = 5) -> dict[str, dict[str, float]]:
    """The RF of the FPN outputs P``min_level``..P``max_level`` and of the RPN head on them.

    Returns:
        ``{"P<l>": {"rf", "stride", "rpn_rf", "radius"}}`` where ``radius`` is
        ``rpn_rf / 2``: the farthest a level's RPN score can depend on.

    Raises:
        ValueError: levels outside 2..5 or in the wrong order.
    """
    if not (2 <= min_level <= max_level <= 5):
        raise ValueError(f"`min_level`/`max_level` must satisfy 2 <= min <= max <= 5, "
                         f"received {min_level!r}, {max_level!r}")
    backbone = backbone_receptive_fields(model_id)
    top = backbone[f"C{max_level}"]["rf"]
    reach = {}
    for level in range(min_level, max_level + 1):
        stride = 2 ** level
        merged = max(backbone[f"C{level}"]["rf"], top)  # top-down sum from C5
        rf = merged + 2 * stride  # 3x3 output convolution
        rpn_rf = rf + 2 * stride  # RPN head's 3x3 convolution
        reach[f"P{level}"] = {"rf": rf, "stride": stride, "rpn_rf": rpn_rf,
                              "radius": rpn_rf / 2}
    return reach
