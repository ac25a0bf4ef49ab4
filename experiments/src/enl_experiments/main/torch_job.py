"""The torch side of the main job (``FRAMEWORK=torch``), run in its own process.

``train -- <enl_torch.train arguments>`` runs ``enl_torch.train`` with torch's
deterministic algorithms on (``torch.use_deterministic_algorithms``), so the
same seed gives the same weights; ``enl_torch.train`` seeds the weights, the
batch order and the augmentation from ``--seed`` itself.

``predict --out DIR [--query IMAGE_ID:X:Y ...] -- <enl_torch.train arguments>``
rebuilds the detector exactly as ``enl_torch.train`` does (same parser, same
builder), loads the last checkpoint of ``--output-dir``, runs it over the
validation split and writes the files the rest of the job reads:
``detections.json`` (COCO results, boxes and RLE masks), ``losses.json`` (from
``log.jsonl``), and for ENL models ``attention.npz`` (attention of each query
pixel at every ENL block, via ``ENL.attention_map`` on the block's input, which
with ``--block-input-norm`` is the normalised feature the ENL sees) and
``blocks/<name>.npz`` (trained d, when the blocks learn it).

:func:`detector_kwargs` is the one translation of Model Garden's detector
config into the torch builders' arguments; the main job derives the torch run's
flags from the garden YAML with it (:func:`detector_flags`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from enl_core.fpn import check_block_norm

# Model Garden's defaults (official/vision/configs/maskrcnn.py, ``Anchor``) for
# what a YAML file leaves out; numbers here so that this module (imported by
# the framework-neutral main job) never imports TensorFlow. A garden test
# holds them equal to Model Garden's.
GARDEN_ANCHOR_DEFAULTS = {"num_scales": 1, "aspect_ratios": [0.5, 1.0, 2.0], "anchor_size": 8.0}
# The same for a decoder section: Model Garden's FPN width
# (official/vision/configs/decoders.py, ``FPN.num_filters``) and the ENL-FPN
# block-input norm of enl_keras.garden (configs/decoders.py, ``ENLFPN``).
GARDEN_DECODER_DEFAULTS = {"num_filters": 256, "block_input_norm": False, "block_norm": "batch"}


def _field(config: Mapping, path: str):
    value = config
    for name in path.split("."):
        if not isinstance(value, Mapping) or name not in value:
            raise ValueError(f"the Model Garden config has no `task.model.{path}`, which "
                             f"sizes the torch detector")
        value = value[name]
    return value


def detector_kwargs(model: Mapping) -> dict:
    """The ``enl_torch.detection`` builder arguments of Model Garden's detector.

    The one translation from a Model Garden ``task.model`` (as read from its
    YAML file) to torchvision's names, so the torch mirror trains the detector
    the garden config describes:

    ======================================  ===================================
    Model Garden (``task.model``)           torch builder argument
    ======================================  ===================================
    ``anchor.anchor_size`` x 2^level,       ``anchor_sizes``, one per map P2..P5,
    ``min_level``..``max_level``            plus torchvision's extra "pool" map
                                            (P6), the same rule one level up
    ``anchor.aspect_ratios``                ``aspect_ratios``
    ``roi_generator.pre_nms_top_k`` /       ``rpn_pre_nms_top_n_train`` /
    ``num_proposals``                       ``rpn_post_nms_top_n_train``
    ``roi_generator.test_pre_nms_top_k`` /  ``rpn_pre_nms_top_n_test`` /
    ``test_num_proposals``                  ``rpn_post_nms_top_n_test``
    ``roi_sampler.num_sampled_rois``        ``box_batch_size_per_image``
    ``detection_head`` fc_dims x num_fcs    ``box_head_fc_dims`` (torchvision's
                                            FC head; Garden also batch-norms it)
    ``mask_head`` num_filters x num_convs   ``mask_head_channels``
    ``detection_generator``                 ``box_detections_per_img``
    ``.max_num_detections``
    ======================================  ===================================

    Garden's ``mask_sampler`` has no torch twin (torchvision's mask head
    samples no subset of the positive RoIs).

    Args:
        model: ``task.model`` of a Model Garden config, as a dict.

    Returns:
        keyword arguments of ``maskrcnn_enl_resnet_fpn`` (all but the mask
        head's also of ``fasterrcnn_enl_resnet_fpn``).

    Raises:
        ValueError: a field is missing, or describes what the torch builders
            cannot build (more than one anchor scale, convolutions in the box
            head); the message names the field.

    Example::

        detector_kwargs(yaml.safe_load(open("beach_common.yaml"))["task"]["model"])
    """
    anchor = {**GARDEN_ANCHOR_DEFAULTS, **model.get("anchor", {})}
    if anchor["num_scales"] != 1:
        raise ValueError(f"`task.model.anchor.num_scales` must be 1 for the torch detector "
                         f"(one anchor size per map), received {anchor['num_scales']!r}")
    min_level, max_level = _field(model, "min_level"), _field(model, "max_level")
    if _field(model, "detection_head.num_convs") != 0:
        raise ValueError("`task.model.detection_head.num_convs` must be 0 for the torch "
                         "detector (an FC box head), received "
                         f"{model['detection_head']['num_convs']!r}")
    return {
        "anchor_sizes": tuple(float(anchor["anchor_size"]) * 2**level
                              for level in range(min_level, max_level + 2)),
        "aspect_ratios": tuple(float(r) for r in anchor["aspect_ratios"]),
        "rpn_pre_nms_top_n_train": _field(model, "roi_generator.pre_nms_top_k"),
        "rpn_post_nms_top_n_train": _field(model, "roi_generator.num_proposals"),
        "rpn_pre_nms_top_n_test": _field(model, "roi_generator.test_pre_nms_top_k"),
        "rpn_post_nms_top_n_test": _field(model, "roi_generator.test_num_proposals"),
        "box_batch_size_per_image": _field(model, "roi_sampler.num_sampled_rois"),
        "box_head_fc_dims": (_field(model, "detection_head.fc_dims"),)
        * _field(model, "detection_head.num_fcs"),
        "mask_head_channels": (_field(model, "mask_head.num_filters"),)
        * _field(model, "mask_head.num_convs"),
        "box_detections_per_img": _field(model, "detection_generator.max_num_detections"),
    }


def decoder_kwargs(model: Mapping) -> dict:
    """The torch builders' FPN width and block-input norm of a Model Garden decoder.

    ``task.model.decoder`` of a garden config (``type: fpn`` or ``enl_fpn``):
    its ``num_filters`` is ``fpn_channels``; an ``enl_fpn``'s
    ``block_input_norm`` / ``block_norm`` are the builders' arguments of the
    same names (a plain ``fpn`` has no blocks: no norm). Absent fields take
    :data:`GARDEN_DECODER_DEFAULTS`.

    Raises:
        ValueError / TypeError: a field of the wrong type, naming it.
    """
    decoder = model.get("decoder") or {"type": "fpn"}
    kind = decoder.get("type", "fpn")
    options = {**GARDEN_DECODER_DEFAULTS, **(decoder.get(kind) or {})}
    channels, norm = options["num_filters"], options["block_input_norm"]
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"`task.model.decoder.{kind}.num_filters` must be a positive int, "
                         f"received {channels!r}")
    if not isinstance(norm, bool):
        raise TypeError(f"`task.model.decoder.{kind}.block_input_norm` must be a bool "
                        f"(unquoted in YAML), received {norm!r}")
    return {"fpn_channels": channels, "block_input_norm": norm,
            "block_norm": check_block_norm(options["block_norm"])}


def decoder_flags(kwargs: Mapping) -> list[str]:
    """``python -m enl_torch.train`` flags for :func:`decoder_kwargs`."""
    flags = ["--fpn-channels", str(kwargs["fpn_channels"])]
    if kwargs["block_input_norm"]:
        flags += ["--block-input-norm", "--block-norm", kwargs["block_norm"]]
    return flags


# Builder arguments with a flag of their own in ``enl_torch.train``; the
# others go through ``--model-kwarg`` (torchvision's own names).
_LIST_FLAGS = {"anchor_sizes": "--anchor-sizes", "aspect_ratios": "--aspect-ratios",
               "box_head_fc_dims": "--box-head-fc-dims",
               "mask_head_channels": "--mask-head-channels"}


def detector_flags(kwargs: Mapping) -> list[str]:
    """``python -m enl_torch.train`` flags that build the detector ``kwargs``
    (:func:`detector_kwargs`) describes: lists as their dedicated flags,
    scalars as ``--model-kwarg NAME=VALUE``."""
    args = []
    for name, value in kwargs.items():
        if name in _LIST_FLAGS:
            args += [_LIST_FLAGS[name], *map(str, value)]
        else:
            args += ["--model-kwarg", f"{name}={value}"]
    return args


def _queries(texts: list[str]) -> dict[int, tuple[float, float]]:
    queries = {}
    for text in texts:
        try:
            image_id, x, y = text.split(":")
            queries[int(image_id)] = (float(x), float(y))
        except ValueError as error:
            raise ValueError(f"`--query` must be IMAGE_ID:X:Y, received {text!r}") from error
    return queries


def read_losses(log_path: Path) -> dict:
    """``{tag: {"step": [...], "value": [...]}}`` from ``enl_torch.train``'s log.jsonl.

    torchvision names its losses ``loss_classifier`` etc.; they are also filed
    under the Model Garden names so both frameworks draw the same panels.
    """
    aliases = {"loss_objectness": "rpn_score_loss", "loss_rpn_box_reg": "rpn_box_loss",
               "loss_classifier": "frcnn_cls_loss", "loss_box_reg": "frcnn_box_loss",
               "loss_mask": "mask_loss"}
    history: dict[str, dict[str, list]] = {}
    for line in log_path.read_text().splitlines():
        record = json.loads(line)
        step = int(record["step"])
        losses = {aliases.get(k, k): v for k, v in record.items()
                  if k.startswith("loss") and isinstance(v, (int, float))}
        if "loss" not in losses and losses:
            losses["total_loss"] = sum(v for k, v in losses.items())
        elif "loss" in losses:
            losses["total_loss"] = losses.pop("loss")
        for tag, value in losses.items():
            series = history.setdefault(tag, {"step": [], "value": []})
            series["step"].append(step)
            series["value"].append(float(value))
    return history


def predict(out_dir: str, train_argv: list[str], queries: dict[int, tuple[float, float]]) -> None:
    import torch

    import enl_torch
    from enl_torch import train as torch_train
    from enl_torch.data.coco import CocoDetection, find_split
    from enl_torch.training import checkpoint as ckpt
    from enl_torch.training.evaluation import detections_to_coco

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    args = torch_train.build_parser().parse_args(train_argv)
    val_set = CocoDetection(*find_split(args.data_dir, args.val_split), train=False,
                            masks=args.model.startswith("maskrcnn"))
    model = torch_train.build_model(args, val_set.num_classes)
    path = ckpt.latest_checkpoint(os.path.join(args.output_dir, "checkpoints"))
    if path is None:
        raise FileNotFoundError(f"no checkpoint under {args.output_dir}/checkpoints")
    model.load_state_dict(ckpt.load_checkpoint(path)["model"])
    model.eval()

    blocks = {name: module for name, module in model.named_modules()
              if isinstance(module, enl_torch.ENL)}
    captured: dict[str, torch.Tensor] = {}
    for name, module in blocks.items():
        module.register_forward_hook(
            lambda module, inputs, output, name=name: captured.__setitem__(name, inputs[0]))
    transformed = {}
    model.transform.register_forward_hook(
        lambda module, inputs, output: transformed.__setitem__("images", output[0]))

    detections, arrays = [], {}
    with torch.no_grad():
        for index in range(len(val_set)):
            image, target = val_set[index]
            image_id = int(target["image_id"])
            outputs = model([image])
            detections += detections_to_coco(outputs, [image_id], val_set.label_to_category)
            if image_id in queries and blocks:
                x, y = queries[image_id]
                images = transformed["images"]
                resized_h, resized_w = images.image_sizes[0]
                padded_h, padded_w = images.tensors.shape[-2:]
                scale_y, scale_x = resized_h / image.shape[-2], resized_w / image.shape[-1]
                for name, module in blocks.items():
                    feature = captured[name]
                    grid_h, grid_w = feature.shape[-2:]
                    row = min(int(y * scale_y * grid_h / padded_h), grid_h - 1)
                    col = min(int(x * scale_x * grid_w / padded_w), grid_w - 1)
                    level = int(round(np.log2(padded_h / grid_h)))
                    attention = module.attention_map(feature, (row, col))[0].float().numpy()
                    prefix = f"image{image_id}_level{level}"
                    arrays[f"{prefix}_map"] = attention
                    arrays[f"{prefix}_query"] = np.asarray((row, col))
                    arrays[f"{prefix}_grid"] = np.asarray((grid_h, grid_w))
    (out / "detections.json").write_text(json.dumps(detections))
    (out / "losses.json").write_text(json.dumps(read_losses(Path(args.output_dir) / "log.jsonl")))
    if blocks:
        np.savez(out / "attention.npz", **arrays)
        block_dir = out / "blocks"
        block_dir.mkdir(exist_ok=True)
        for name, module in blocks.items():
            weights = getattr(module, "dct_weights", None)
            if isinstance(weights, torch.nn.Parameter):
                # Under block_input_norm the ENL is the ``block`` child of its
                # wrapper; name the file after the level's slot either way.
                slot = name.removesuffix(".block")
                np.savez(block_dir / f"{slot.replace('.', '_')}.npz",
                         dct_weights=weights.detach().double().numpy())
    print(f"wrote {len(detections)} detections for {len(val_set)} images to {out}")


def make_deterministic() -> None:
    """Deterministic torch kernels (an op without one raises instead of varying)."""
    import torch

    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def train(train_argv: list[str]) -> int:
    make_deterministic()
    from enl_torch import train as torch_train

    return torch_train.main(train_argv)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="python -m enl_experiments.main.torch_job")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("train", help="-- <enl_torch.train arguments>")
    predict_parser = commands.add_parser("predict")
    predict_parser.add_argument("--out", required=True)
    predict_parser.add_argument("--query", action="append", default=[], help="IMAGE_ID:X:Y")
    args = parser.parse_args(argv[:split])
    if args.command == "train":
        return train(argv[split + 1:])
    else:
        predict(args.out, argv[split + 1:], _queries(args.query))
    return 0


if __name__ == "__main__":
    sys.exit(main())
