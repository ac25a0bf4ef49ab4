"""enl_keras: the Efficient Non-Local module for Keras 3 (any backend).

Levi & Ullman, "Efficient Coarse-to-Fine Non-Local Module for the Detection
of Small Objects", BMVC 2019.

    ENL: the efficient block, ``theta^T (phi g) / N + E-hat (E-hat^T g)``.
    NonLocal: the N x N block of Wang et al., the paper's baseline.
    ops: the math, in backend-agnostic ``keras.ops`` (shared with the tf_keras
        twins in ``enl_keras.garden.layers``, which import tf_keras and are
        not imported here).
"""

import os as _os

try:
    import keras as _keras  # noqa: F401  (imports the backend KERAS_BACKEND names)
except ModuleNotFoundError as _error:
    if (_error.name or "").split(".")[0] not in ("tensorflow", "torch", "jax", "jaxlib"):
        raise
    raise ImportError(
        f"enl_keras needs a Keras 3 backend: Keras tried {_error.name!r} (KERAS_BACKEND="
        f"{_os.environ.get('KERAS_BACKEND', '<unset: tensorflow>')}), which is not installed. "
        "Install one with `pip install enl-keras[tensorflow]`, `enl-keras[torch]` or "
        "`enl-keras[jax]` and set KERAS_BACKEND to it.") from _error

from enl_keras import ops  # noqa: E402
from enl_keras.layers import ENL, NonLocal  # noqa: E402

__version__ = "0.1.0"

__all__ = ["ENL", "NonLocal", "ops"]
