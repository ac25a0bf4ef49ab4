"""The paper's detector variants, one table with each framework's name for them.

Levi & Ullman 2019, Tables 1-3: a Faster / Mask R-CNN ResNet-FPN baseline and
the same detector with non-local blocks added. Every package names a variant
from this table: ``enl_torch.detection``'s builders take :attr:`Variant.key`
(or the label) as ``variant``, ``enl_keras.garden`` registers
:func:`garden_experiment` names, the main job and the bench print
:attr:`Variant.label`.

=============  ===========  ============  ===================================
``key``        ``label``    paper         what is added to the baseline
=============  ===========  ============  ===================================
``baseline``   baseline     baseline      nothing
``1nl_bu``     +1NL BU      +1NL, BU      one embedded-Gaussian NL before the
                                          last block of res4 (bottom-up)
``3enl_td``    +3ENL TD     +3ENL, TD     ENL on the FPN top-down stream at
                                          P5, P4, P3
``3nl_td``     +3NL TD      +3NL, TD      embedded-Gaussian NL at P5, P4, P3
=============  ===========  ============  ===================================
"""

from __future__ import annotations

import dataclasses

from enl_core.fpn import BLOCK_TYPES

DETECTORS = ("fasterrcnn", "maskrcnn")
"""The two detector families (Model Garden's experiment-name prefixes)."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of the paper's tables.

    Attributes:
        key: the framework-neutral name (``enl_torch``'s ``variant``,
            ``python -m enl_torch.train --variant``).
        label: the label printed in reports and the README ("+3ENL TD").
        paper_label: the label as the paper prints it ("+3ENL, TD").
        bottom_up_nonlocal: one NL block in the backbone (res4).
        fpn_block: the block on the FPN top-down stream ("enl", "nl") or None.
        garden_suffix: the ``enl_keras.garden`` experiment's tag
            (``maskrcnn_resnetfpn_<tag>_coco``); None for Model Garden's own
            baseline experiment.
    """

    key: str
    label: str
    paper_label: str
    bottom_up_nonlocal: bool
    fpn_block: str | None
    garden_suffix: str | None

    def __post_init__(self):
        if self.fpn_block is not None and self.fpn_block not in BLOCK_TYPES:
            raise ValueError(f"`fpn_block` must be None or one of {BLOCK_TYPES}, "
                             f"received {self.fpn_block!r}")


VARIANTS = {variant.key: variant for variant in (
    Variant("baseline", "baseline", "baseline", False, None, None),
    Variant("1nl_bu", "+1NL BU", "+1NL, BU", True, None, "nlbu"),
    Variant("3enl_td", "+3ENL TD", "+3ENL, TD", False, "enl", "enl"),
    Variant("3nl_td", "+3NL TD", "+3NL, TD", False, "nl", "nltd"),
)}
"""Every variant by :attr:`Variant.key`, in the paper's order."""


def get_variant(name: str) -> Variant:
    """The variant called ``name``: its key, label or paper label.

    Raises:
        ValueError: naming `variant` and the value received, with the names
            accepted.

    Example::

        get_variant("+3ENL, TD").key   # "3enl_td"
    """
    for variant in VARIANTS.values():
        if name in (variant.key, variant.label, variant.paper_label):
            return variant
    names = [n for v in VARIANTS.values() for n in (v.key, v.label, v.paper_label)]
    raise ValueError(f"`variant` must be one of {sorted(set(names))}, received {name!r}")


def garden_experiment(variant: str | Variant, detector: str = "maskrcnn") -> str:
    """The Model Garden experiment that trains ``variant`` as ``detector``.

    The baseline is Model Garden's own ``<detector>_resnetfpn_coco``; the
    others are registered by ``enl_keras.garden``.

    Raises:
        ValueError: naming `variant` or `detector`.

    Example::

        garden_experiment("3enl_td")   # "maskrcnn_resnetfpn_enl_coco"
    """
    if detector not in DETECTORS:
        raise ValueError(f"`detector` must be one of {DETECTORS}, received {detector!r}")
    if not isinstance(variant, Variant):
        variant = get_variant(variant)
    tag = "" if variant.garden_suffix is None else f"_{variant.garden_suffix}"
    return f"{detector}_resnetfpn{tag}_coco"


__all__ = ["DETECTORS", "VARIANTS", "Variant", "garden_experiment", "get_variant"]
