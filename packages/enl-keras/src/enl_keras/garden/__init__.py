"""enl_keras.garden: ENL for TF Model Garden (tf_keras).

``layers`` holds the tf_keras twins of ``enl_keras.ENL`` / ``enl_keras.NonLocal``
(the layers Model Garden models are built from). Needs Keras 3's TensorFlow
backend and the ``garden`` extra (tf-keras, tf-models-official).
"""

from enl_keras.garden import layers

__all__ = ["layers"]
