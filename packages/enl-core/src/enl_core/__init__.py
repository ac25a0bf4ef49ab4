"""enl_core: the float64 reference of the Efficient Non-Local module.

Levi & Ullman, "Efficient Coarse-to-Fine Non-Local Module for the Detection of
Small Objects", BMVC 2019. The numerical contract is docs/ENL-SPEC.md.

Modules:
    dct: DCT bases, E-hat, L and its three applications (eq. 8-11).
    blocks: the explicit NL block and ENL (eq. 1-9), the reference ``expected_fn``.
    fpn: the ENL-FPN's block names, norms, level checks and top-down reference.
    params: the weight layout and ``.npz`` interchange shared by all frameworks.
    cost: multiply-adds, parameters and memory of NL / ENL (Table 3).
    variants: the paper's detector variants, with each framework's name for them.
    coco: COCO folders, annotation checks and scoring for every framework
        (``import enl_core.coco``; needs the ``coco`` extra, pycocotools).
"""

from enl_core import blocks, cost, dct, fpn, params, variants
from enl_core.blocks import attention_map, enl_block, nonlocal_affinity, nonlocal_block
from enl_core.params import BlockParams, init_params, load_npz, save_npz
from enl_core.validation import DEFAULT_DCT_SIZE, normalize_dct_size, normalize_dct_weights

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_DCT_SIZE",
    "BlockParams",
    "attention_map",
    "blocks",
    "cost",
    "dct",
    "enl_block",
    "fpn",
    "init_params",
    "load_npz",
    "nonlocal_affinity",
    "nonlocal_block",
    "normalize_dct_size",
    "normalize_dct_weights",
    "params",
    "save_npz",
    "variants",
]
