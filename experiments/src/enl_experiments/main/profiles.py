"""Budgets of the main job: data size, input size, steps, batch and learning rate.

``default`` is sized for about 30 minutes on 2 idle CPU cores (the three
variants, one seed, on the 64 x 512 px strip dataset; README); ``long`` is
its CPU evidence run (twice the data and steps); ``full`` is a longer
schedule on larger images (GPU-sized, hours on a CPU); ``tiny`` is the
test's few-step smoke run; ``paper`` is the protocol of the paper's Tables 1
and 2 on real COCO (``COCO_DIR``), with Model Garden's ResNet-50 FPN configs
of ``enl_experiments/configs/garden/``.
"""

from __future__ import annotations

import dataclasses


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
        garden_configs: ``(common, baseline, enl, nlbu)`` YAML files, relative to
            the packaged ``enl_experiments/configs/`` (``garden/`` for ``paper``) or
            to ``--config-dir``; ``None`` entries are skipped
            (``enl_experiments.main.variants`` maps each variant to its slot).
        strip_size: (height, width) of the ``strip`` dataset's canvas (its
            deciding objects sit up to the width away); ``image_size`` is the
            ``beach`` dataset's square size.
        torch_backbone: backbone of the torch mirror (``enl_torch.detection.BACKBONES``;
            its FPN width and block-input norm come from the variant's garden
            decoder, :func:`enl_experiments.main.torch_job.decoder_kwargs`):
            ResNet-18 by default, as the garden configs (torchvision has no
            width multiplier, so it is the full-width R18, not garden's
            ``depth_multiplier: 0.25``); ResNet-50 for ``paper``.
        torch_learning_rate: its SGD peak rate (torchvision's ResNet from scratch
            is less tolerant of the Model Garden profile's rate).
        torch_sizes: its (min_size, max_size); None means image_size for both.
        torch_detector_from_garden: size the torch mirror's anchors, proposal
            counts and heads as the common garden YAML (``garden_configs[0]``)
            does, through :func:`enl_experiments.main.torch_job.detector_kwargs`
            (:meth:`enl_experiments.main.runners.TorchRunner.detector_kwargs`):
            True for the embedded-dataset
            profiles; False (torchvision's standard R50-FPN sizes) for
            ``paper``. torchvision's own defaults (32..512 px anchors, 2000
            proposals, 512 sampled RoIs, a 1024-wide two-FC box head, four
            256-channel mask convs, 100 detections) are sized for COCO at
            800 px and made a 128 px CPU step ~6x slower.
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
    garden_configs: tuple = ("beach_common.yaml", "beach_baseline.yaml", "beach_enl.yaml",
                             "beach_nlbu.yaml")
    strip_size: tuple = (64, 512)
    torch_backbone: str = "resnet18"
    torch_learning_rate: float = 0.02
    torch_sizes: tuple | None = None
    torch_detector_from_garden: bool = True
    figure_images: int = 3
    garden_mode: str = "train_and_eval"
    own_schedule: bool = False

    def __post_init__(self):
        if self.torch_detector_from_garden and self.garden_configs[0] is None:
            raise ValueError(f"`torch_detector_from_garden` needs a common garden config "
                             f"(garden_configs[0]), received {self.garden_configs!r}")


PROFILES = {
    "default": Profile("default", image_size=128, num_train=400, num_val=100, train_steps=1000,
                       batch_size=4, eval_batch_size=8, learning_rate=0.04, warmup_steps=50,
                       summary_interval=20),
    # The CPU evidence profile: twice the default's data and steps (fixed in
    # advance, before any strip comparison; about 2-2.5 h for 3 models x 3 seeds
    # on 2 idle cores, resumable across sittings with FIRST_SEED).
    "long": Profile("long", image_size=128, num_train=800, num_val=100, train_steps=2000,
                    batch_size=4, eval_batch_size=8, learning_rate=0.04, warmup_steps=100,
                    summary_interval=20),
    "full": Profile("full", image_size=256, num_train=4000, num_val=500, train_steps=20000,
                    batch_size=8, eval_batch_size=8, learning_rate=0.04, warmup_steps=500,
                    summary_interval=100),
    "tiny": Profile("tiny", image_size=64, num_train=8, num_val=4, train_steps=4,
                    batch_size=2, eval_batch_size=4, learning_rate=0.01, warmup_steps=1,
                    summary_interval=2, figure_images=2, garden_mode="train",
                    strip_size=(64, 256)),
    "paper": Profile("paper", image_size=1024, num_train=0, num_val=0, train_steps=90000,
                     batch_size=16, eval_batch_size=8, learning_rate=0.02, warmup_steps=500,
                     summary_interval=100,
                     garden_configs=(None, "garden/maskrcnn_r50_baseline.yaml",
                                     "garden/maskrcnn_r50_enl.yaml",
                                     "garden/maskrcnn_r50_nlbu.yaml"),
                     torch_backbone="resnet50", torch_sizes=(800, 1333),
                     torch_detector_from_garden=False,
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
