"""enl_keras: the Efficient Non-Local module for Keras 3 (any backend).

Levi & Ullman, "Efficient Coarse-to-Fine Non-Local Module for the Detection
of Small Objects", BMVC 2019.

    ENL: the efficient block, ``theta^T (phi g) / N + E-hat (E-hat^T g)``.
    NonLocal: the N x N block of Wang et al., the paper's baseline.
    ops: the math, in backend-agnostic ``keras.ops`` (shared with the tf_keras
        twins in ``enl_keras.garden.layers``, which import tf_keras and are
        not imported here).
"""

from enl_keras import ops
from enl_keras.layers import ENL, NonLocal

__version__ = "0.1.0"

__all__ = ["ENL", "NonLocal", "ops"]
