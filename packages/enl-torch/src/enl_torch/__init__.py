"""enl_torch: the Efficient Non-Local block for PyTorch (Levi & Ullman, BMVC 2019).

``ENL`` and ``NonLocal`` take NCHW tensors and hold the same numbers as the
float64 reference ``enl_core`` (docs/ENL-SPEC.md). ``convert`` moves a ``state_dict``'s
blocks to and from the neutral ``.npz``; ``functional`` is the math.
"""

from enl_torch import convert, functional
from enl_torch.enl import ENL
from enl_torch.nonlocal_block import NonLocal

__version__ = "0.1.0"

__all__ = ["ENL", "NonLocal", "convert", "functional"]
