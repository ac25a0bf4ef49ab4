"""Imports whose only job is to register the ENL parts with Model Garden.

After ``import enl_keras.garden.registry_imports`` (the train entry does it),
Model Garden knows the ``enl_fpn`` decoder, the ``resnet_nl`` backbone, the
six ``*_resnetfpn_{enl,nlbu,nltd}_coco`` experiments and their task, besides
everything ``official.vision.registry_imports`` registers.
"""

# ruff: noqa: F401
from official.vision import registry_imports

from enl_keras.garden.configs import maskrcnn as maskrcnn_configs
from enl_keras.garden.modeling.backbones import resnet_nl
from enl_keras.garden.modeling.decoders import enl_fpn
from enl_keras.garden.tasks import maskrcnn as maskrcnn_tasks
