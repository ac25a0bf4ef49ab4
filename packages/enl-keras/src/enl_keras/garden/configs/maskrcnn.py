"""Faster / Mask R-CNN configs and experiments with ENL-FPN or a NL backbone.

Config subclasses widen Model Garden's decoder and backbone one-ofs
(``enl_fpn``, ``resnet_nl``); every other field, default and the task itself
are Model Garden's. The registered experiments are Model Garden's own
``fasterrcnn_resnetfpn_coco`` / ``maskrcnn_resnetfpn_coco`` (ResNet-50 FPN)
with one change each, so they compare with Model Garden's baselines as is:

==================================  =========================================
experiment                          change (paper, Tables 1-3)
==================================  =========================================
``{fasterrcnn,maskrcnn}_resnetfpn_enl_coco``   decoder ``enl_fpn``, ENL on P5, P4, P3 ("+3ENL, TD")
``{fasterrcnn,maskrcnn}_resnetfpn_nlbu_coco``  backbone ``resnet_nl``, one NL in res4 ("+1NL, BU")
``{fasterrcnn,maskrcnn}_resnetfpn_nltd_coco``  decoder ``enl_fpn`` with ``block: nl`` ("+3NL, TD")
==================================  =========================================

The paper's protocol (800 px images, 1x schedule, R50 / R101) is in the YAML
files under ``experiments/src/enl_experiments/configs/garden/``.
"""

from __future__ import annotations

import dataclasses

from official.core import config_definitions as cfg
from official.core import exp_factory
from official.vision.configs import maskrcnn

from enl_core.fpn import DEFAULT_BLOCK_LEVELS
from enl_core.variants import DETECTORS, VARIANTS, garden_experiment
from enl_keras.garden.configs import backbones, decoders


@dataclasses.dataclass
class MaskRCNN(maskrcnn.MaskRCNN):
    """Model Garden's Mask R-CNN model config with the ENL one-ofs."""

    backbone: backbones.Backbone = dataclasses.field(
        default_factory=lambda: backbones.Backbone(type="resnet"))
    decoder: decoders.Decoder = dataclasses.field(
        default_factory=lambda: decoders.Decoder(type="fpn"))


@dataclasses.dataclass
class MaskRCNNTask(maskrcnn.MaskRCNNTask):
    """Model Garden's Mask R-CNN task config whose model is :class:`MaskRCNN`."""

    model: MaskRCNN = dataclasses.field(default_factory=MaskRCNN)


def with_enl_task(config: cfg.ExperimentConfig) -> cfg.ExperimentConfig:
    """Returns ``config`` with its task converted to :class:`MaskRCNNTask`.

    Every field keeps its value; only the type widens, so ``enl_fpn`` and
    ``resnet_nl`` become valid choices.
    """
    task = MaskRCNNTask()
    task.override(config.task.as_dict(), is_strict=True)
    config.task = task
    return config


def _enl_td(config: cfg.ExperimentConfig, block: str) -> cfg.ExperimentConfig:
    config = with_enl_task(config)
    fpn = config.task.model.decoder.fpn
    config.task.model.decoder = decoders.Decoder(
        type="enl_fpn",
        enl_fpn=decoders.ENLFPN(num_filters=fpn.num_filters, fusion_type=fpn.fusion_type,
                                use_separable_conv=fpn.use_separable_conv,
                                use_keras_layer=fpn.use_keras_layer,
                                block_levels=list(DEFAULT_BLOCK_LEVELS), block=block))
    return config


def _nl_bu(config: cfg.ExperimentConfig) -> cfg.ExperimentConfig:
    config = with_enl_task(config)
    resnet = config.task.model.backbone.resnet
    config.task.model.backbone = backbones.Backbone(
        type="resnet_nl", resnet_nl=backbones.ResNetNL(**resnet.as_dict(), nl_level=4))
    return config


@exp_factory.register_config_factory(garden_experiment("3enl_td", "fasterrcnn"))
def fasterrcnn_resnetfpn_enl_coco() -> cfg.ExperimentConfig:
    """Faster R-CNN, ResNet-50 FPN, ENL on P5, P4, P3 ("+3ENL, TD", Table 1)."""
    return _enl_td(maskrcnn.fasterrcnn_resnetfpn_coco(), "enl")


@exp_factory.register_config_factory(garden_experiment("3enl_td", "maskrcnn"))
def maskrcnn_resnetfpn_enl_coco() -> cfg.ExperimentConfig:
    """Mask R-CNN, ResNet-50 FPN, ENL on P5, P4, P3 ("+3ENL, TD", Table 2)."""
    return _enl_td(maskrcnn.maskrcnn_resnetfpn_coco(), "enl")


@exp_factory.register_config_factory(garden_experiment("3nl_td", "fasterrcnn"))
def fasterrcnn_resnetfpn_nltd_coco() -> cfg.ExperimentConfig:
    """Faster R-CNN, ResNet-50 FPN, embedded-Gaussian NL on P5, P4, P3 ("+3NL, TD")."""
    return _enl_td(maskrcnn.fasterrcnn_resnetfpn_coco(), "nl")


@exp_factory.register_config_factory(garden_experiment("3nl_td", "maskrcnn"))
def maskrcnn_resnetfpn_nltd_coco() -> cfg.ExperimentConfig:
    """Mask R-CNN, ResNet-50 FPN, embedded-Gaussian NL on P5, P4, P3 ("+3NL, TD")."""
    return _enl_td(maskrcnn.maskrcnn_resnetfpn_coco(), "nl")


@exp_factory.register_config_factory(garden_experiment("1nl_bu", "fasterrcnn"))
def fasterrcnn_resnetfpn_nlbu_coco() -> cfg.ExperimentConfig:
    """Faster R-CNN, ResNet-50 with one NL before res4's last block ("+1NL, BU")."""
    return _nl_bu(maskrcnn.fasterrcnn_resnetfpn_coco())


@exp_factory.register_config_factory(garden_experiment("1nl_bu", "maskrcnn"))
def maskrcnn_resnetfpn_nlbu_coco() -> cfg.ExperimentConfig:
    """Mask R-CNN, ResNet-50 with one NL before res4's last block ("+1NL, BU")."""
    return _nl_bu(maskrcnn.maskrcnn_resnetfpn_coco())


# The experiments registered here: every variant of enl_core.variants but
# Model Garden's own baseline, for both detectors.
EXPERIMENTS = tuple(garden_experiment(variant, detector)
                    for variant in VARIANTS.values() if variant.garden_suffix is not None
                    for detector in DETECTORS)
