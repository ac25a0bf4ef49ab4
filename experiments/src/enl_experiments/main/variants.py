"""The detector variants the main job compares (the rows of the paper's Tables 1 and 2).

This module is the main job's one place that maps a variant's key to what
each framework trains for it; every other module of ``enl_experiments`` takes
the keys from here. The keys are the framework-neutral names (``baseline``,
``1nl_bu``, ``3enl_td``) that ``enl_torch.train --variant`` already takes.

=============  ==========  ======================================  ================
key            label       Model Garden experiment                  garden config
=============  ==========  ======================================  ================
``baseline``   baseline    ``maskrcnn_resnetfpn_coco``             profile slot 1
``1nl_bu``     +1NL BU     ``maskrcnn_resnetfpn_nlbu_coco``        profile slot 3
``3enl_td``    +3ENL TD    ``maskrcnn_resnetfpn_enl_coco``         profile slot 2
=============  ==========  ======================================  ================

(The "slot" is the index in :attr:`enl_experiments.main.profiles.Profile.garden_configs`,
whose slot 0 is the configuration every variant shares.)
"""

from __future__ import annotations

from enl_core import variants as core_variants

VARIANTS = ("baseline", "1nl_bu", "3enl_td")
# Labels and Model Garden names come from the one table of variants.
LABELS = {key: core_variants.VARIANTS[key].label for key in VARIANTS}
GARDEN_EXPERIMENTS = {key: core_variants.garden_experiment(core_variants.VARIANTS[key])
                      for key in VARIANTS}
GARDEN_CONFIG_SLOT = {"baseline": 1, "3enl_td": 2, "1nl_bu": 3}
# The variant whose ENL blocks the attention and DCT figures draw.
ENL_VARIANT = "3enl_td"


def parse_variants(text) -> tuple[str, ...]:
    """The variants named in ``text`` (comma-separated), in the canonical order.

    The baseline is always trained (every delta is against it), so it is added
    when ``text`` leaves it out.

    Args:
        text: e.g. ``"baseline,3enl_td"``, or a list of keys; empty: all of them.

    Returns:
        A tuple of keys of :data:`VARIANTS`, baseline first, no duplicates.

    Raises:
        ValueError: naming `variants` and the value received.

    Example:
        >>> parse_variants("3enl_td")
        ('baseline', '3enl_td')
    """
    if isinstance(text, str):
        names = [name.strip() for name in text.split(",") if name.strip()]
    elif isinstance(text, (list, tuple)) and all(isinstance(n, str) for n in text):
        names = list(text)
    else:
        raise ValueError(f"`variants` must be a comma-separated string of {VARIANTS}, "
                         f"received {text!r}")
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        raise ValueError(f"`variants` entries must be in {VARIANTS}, received {text!r} "
                         f"(unknown: {unknown})")
    if not names:
        return VARIANTS
    chosen = {"baseline", *names}
    return tuple(v for v in VARIANTS if v in chosen)
