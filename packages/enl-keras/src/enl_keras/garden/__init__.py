"""enl_keras.garden: ENL for TF Model Garden (tf_keras).

``layers`` holds the tf_keras twins of ``enl_keras.ENL`` / ``enl_keras.NonLocal``
(the layers Model Garden models are built from). Needs Keras 3's TensorFlow
backend and the ``garden`` extra (tf-keras, tf-models-official).

The Model Garden project around them, laid out as Model Garden's own projects:
``modeling/`` (the ``enl_fpn`` decoder, the ``resnet_nl`` backbone),
``configs/`` (config subclasses, the registered ``*_resnetfpn_{enl,nlbu,nltd}_coco``
experiments), ``tasks/``, ``registry_imports`` (import it to register them),
``train`` (``python -m enl_keras.garden.train``: Model Garden's trainer) and
``data`` (COCO folders to TFRecords with Model Garden's converter).
"""

# Model Garden's stack is the `garden` extra; name it rather than fail deep inside.
try:
    import official as _official  # noqa: F401
    import tf_keras as _tf_keras  # noqa: F401
except ModuleNotFoundError as _error:
    if (_error.name or "").split(".")[0] not in ("tensorflow", "tf_keras", "official"):
        raise
    raise ImportError(f"enl_keras.garden needs `pip install enl-keras[garden]` (missing: "
                      f"{_error.name})") from _error

from enl_keras.garden import layers  # noqa: E402

__all__ = ["layers"]
