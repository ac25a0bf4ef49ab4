"""Registers Model Garden's Mask R-CNN task for the ENL task config.

The task (data pipeline, losses, COCO evaluation, checkpoint loading) is
Model Garden's, unchanged; only its config type is new, and Model Garden's
task factory looks tasks up by config type.
"""

from official.core import task_factory
from official.vision.tasks import maskrcnn

from enl_keras.garden.configs import maskrcnn as maskrcnn_config


@task_factory.register_task_cls(maskrcnn_config.MaskRCNNTask)
class MaskRCNNTask(maskrcnn.MaskRCNNTask):
    """Model Garden's ``MaskRCNNTask`` for :class:`maskrcnn_config.MaskRCNNTask`."""
