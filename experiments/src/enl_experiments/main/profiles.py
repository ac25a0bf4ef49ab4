"""Budgets of the main job: data size, input size, steps, batch and learning rate.

``default`` finishes in about 20 minutes on 2 CPU cores (both models, one
seed); ``full`` is a longer schedule on larger images (GPU-sized, hours on a
CPU); ``tiny`` is the test's few-step smoke run; ``paper`` is the protocol of
the paper's Tables 1 and 2 on real COCO (``COCO_DIR``), with Model Garden's
ResNet-50 FPN configs of ``enl_experiments/configs/garden/``.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TorchDetector:
    """Sizes of the torch mirror's detector (``enl_torch.train`` flags).

    :data:`BEACH_TORCH_DETECTOR` mirrors Model Garden's
    ``enl_experiments/configs/beach_common.yaml``, which the garden side of the
    ``default`` / ``full`` / ``tiny`` profiles trains (a test holds the two
    equal where they overlap). torchvision's own defaults (32..512 px anchors,
    2000 proposals, 512 sampled RoIs, a 1024-wide two-FC box head, four
    256-channel mask convs, 100 detections) are sized for COCO at 800 px and
    made a 128 px CPU step ~6x slower.

    Attributes:
        anchor_sizes: one anchor size per FPN map, P2..P5 then torchvision's extra
            ``"pool"`` level P6 (``--anchor-sizes``): Garden's ``anchor_size: 2.0``
            is ``2 * stride`` (8, 16, 32, 64; P6, which Garden's
            ``max_level: 5`` lacks, continues the rule: 128).
        aspect_ratios: ``--aspect-ratios`` (Garden's default 0.5, 1, 2; one scale).
        rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train: Garden's
            ``roi_generator.pre_nms_top_k`` (per level in both) / ``num_proposals``.
        rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test: its ``test_pre_nms_top_k``
            / ``test_num_proposals``.
        box_batch_size_per_image: ``roi_sampler.num_sampled_rois``.
        box_head_fc_dims: ``detection_head`` FCs (``num_convs: 0``, ``num_fcs: 1``,
            ``fc_dims: 256``): torchvision's FC head with one 256 layer, not its
            two-FC ``TwoMLPHead``, so the two frameworks' heads are the same
            shape (Garden also batch-normalises it; torchvision's heads have no norm).
        mask_head_channels: ``mask_head`` convs (``num_convs: 2``,
            ``num_filters: 64``); torchvision's mask head samples no subset of
            the positive RoIs (Garden's ``mask_sampler`` has no torch twin).
        detections_per_img: ``detection_generator.max_num_detections``.
    """

    anchor_sizes: tuple = (8, 16, 32, 64, 128)
    aspect_ratios: tuple = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n_train: int = 1000
    rpn_post_nms_top_n_train: int = 256
    rpn_pre_nms_top_n_test: int = 500
    rpn_post_nms_top_n_test: int = 200
    box_batch_size_per_image: int = 128
    box_head_fc_dims: tuple = (256,)
    mask_head_channels: tuple = (64, 64)
    detections_per_img: int = 50

    def train_args(self) -> list[str]:
        """The ``python -m enl_torch.train`` flags: lists as dedicated flags, the
        scalars as ``--model-kwarg`` (torchvision's own argument names)."""
        args = ["--anchor-sizes", *map(str, self.anchor_sizes),
                "--aspect-ratios", *map(str, self.aspect_ratios),
                "--box-head-fc-dims", *map(str, self.box_head_fc_dims),
                "--mask-head-channels", *map(str, self.mask_head_channels)]
        scalars = {"rpn_pre_nms_top_n_train": self.rpn_pre_nms_top_n_train,
                   "rpn_post_nms_top_n_train": self.rpn_post_nms_top_n_train,
                   "rpn_pre_nms_top_n_test": self.rpn_pre_nms_top_n_test,
                   "rpn_post_nms_top_n_test": self.rpn_post_nms_top_n_test,
                   "box_batch_size_per_image": self.box_batch_size_per_image,
                   "box_detections_per_img": self.detections_per_img}
        for key, value in scalars.items():
            args += ["--model-kwarg", f"{key}={value}"]
        return args


# Mirrors enl_experiments/configs/beach_common.yaml (see TorchDetector).
BEACH_TORCH_DETECTOR = TorchDetector()


@dataclasses.dataclass(frozen=True)
class Profile:
    """One budget of the main job.

    Attributes:
        name: the profile's name (``PROFILE=...``).
        image_size: square input size in pixels (a multiple of 64).
        num_train, num_val: embedded-dataset sizes (ignored with COCO_DIR).
        train_steps: optimizer steps per model and seed.
        batch_size, eval_batch_size: global batch sizes.
        learning_rate, warmup_steps: SGD (momentum 0.9) peak rate and linear warm-up
            (cosine decay to 0 after it).
        summary_interval: steps between logged losses.
        garden_configs: ``(common, baseline, enl)`` YAML files, relative to the
            packaged ``enl_experiments/configs/`` (``garden/`` for ``paper``) or
            to ``--config-dir``; ``None`` entries are skipped.
        block_input_norm: the +3ENL TD model's blocks see a normalised
            input (``x + ENL(n) - n``, ``n = norm(x)``); mirrors ``block_input_norm`` of the
            ENL decoder in the profile's garden YAML (``configs/beach_enl.yaml``:
            true; the paper's ``garden/maskrcnn_r50_enl.yaml``: absent, false),
            which is what the garden side reads; the torch mirror gets it as
            ``--block-input-norm``. A test holds the two to the same value.
        block_norm: that norm, ``"layer"`` (no running statistics) or
            ``"batch"``; mirrors the YAML's ``block_norm`` (``beach_enl.yaml``:
            layer) and reaches the torch mirror as ``--block-norm``.
        torch_backbone: backbone of the torch mirror (``enl_torch.detection.BACKBONES``):
            ResNet-18 by default, as the garden configs (torchvision has no
            width multiplier, so it is the full-width R18, not garden's
            ``depth_multiplier: 0.25``); ResNet-50 for ``paper``.
        torch_fpn_channels: its FPN width (``--fpn-channels``): 64 as the
            garden configs' ``num_filters``, 256 for ``paper``.
        torch_learning_rate: its SGD peak rate (torchvision's ResNet from scratch
            is less tolerant of the Model Garden profile's rate).
        torch_sizes: its (min_size, max_size); None means image_size for both.
        torch_detector: its anchors, proposal counts and head sizes
            (:class:`TorchDetector`): :data:`BEACH_TORCH_DETECTOR`, mirroring
            ``configs/beach_common.yaml``, for the embedded-dataset profiles;
            None (torchvision's standard R50-FPN sizes) for ``paper``.
        figure_images: validation images drawn with their detections.
        garden_mode: Model Garden's ``--mode``; ``train_and_eval`` also runs
            its own COCO evaluation at the end (kept as a cross-check of ours).
        own_schedule: the YAML files carry their own input size, steps,
            batch and learning rate (``paper``); only data paths and the
            number of classes are overridden.
    """

    name: str
    image_size: int
    num_train: int
    num_val: int
    train_steps: int
    batch_size: int
    eval_batch_size: int
    learning_rate: float
    warmup_steps: int
    summary_interval: int
    garden_configs: tuple = ("beach_common.yaml", "beach_baseline.yaml", "beach_enl.yaml")
    block_input_norm: bool = True
    block_norm: str = "layer"
    torch_backbone: str = "resnet18"
    torch_fpn_channels: int = 64
    torch_learning_rate: float = 0.02
    torch_sizes: tuple | None = None
    torch_detector: TorchDetector | None = BEACH_TORCH_DETECTOR
    figure_images: int = 3
    garden_mode: str = "train_and_eval"
    own_schedule: bool = False


PROFILES = {
    "default": Profile("default", image_size=128, num_train=400, num_val=100, train_steps=1000,
                       batch_size=4, eval_batch_size=8, learning_rate=0.04, warmup_steps=50,
                       summary_interval=20),
    "full": Profile("full", image_size=256, num_train=4000, num_val=500, train_steps=20000,
                    batch_size=8, eval_batch_size=8, learning_rate=0.04, warmup_steps=500,
                    summary_interval=100),
    "tiny": Profile("tiny", image_size=64, num_train=8, num_val=4, train_steps=4,
                    batch_size=2, eval_batch_size=4, learning_rate=0.01, warmup_steps=1,
                    summary_interval=2, figure_images=2, garden_mode="train"),
    "paper": Profile("paper", image_size=1024, num_train=0, num_val=0, train_steps=90000,
                     batch_size=16, eval_batch_size=8, learning_rate=0.02, warmup_steps=500,
                     summary_interval=100,
                     garden_configs=(None, "garden/maskrcnn_r50_baseline.yaml",
                                     "garden/maskrcnn_r50_enl.yaml"),
                     block_input_norm=False, block_norm="batch", torch_backbone="resnet50",
                     torch_fpn_channels=256, torch_sizes=(800, 1333), torch_detector=None,
                     own_schedule=True),
}


def get_profile(name: str) -> Profile:
    """The profile called ``name``.

    Raises:
        ValueError: naming `profile` and the value received.
    """
    if name not in PROFILES:
        raise ValueError(f"`profile` must be one of {sorted(PROFILES)}, received {name!r}")
    return PROFILES[name]
