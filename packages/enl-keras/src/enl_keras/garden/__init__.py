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

from enl_keras.garden import layers

__all__ = ["layers"]
