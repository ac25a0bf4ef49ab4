"""The torch side of the main job (``FRAMEWORK=torch``), run in its own process.

``predict --out DIR [--query IMAGE_ID:X:Y ...] -- <enl_torch.train arguments>``
rebuilds the detector exactly as ``enl_torch.train`` does (same parser, same
builder), loads the last checkpoint of ``--output-dir``, runs it over the
validation split and writes the files the rest of the job reads:
``detections.json`` (COCO results, boxes and RLE masks), ``losses.json`` (from
``log.jsonl``), and for ENL models ``attention.npz`` (attention of each query
pixel at every ENL block, via ``ENL.attention_map`` on the block's input, which
with ``--block-input-norm`` is the normalised feature the ENL sees) and
``blocks/<name>.npz`` (trained d, when the blocks learn it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np


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
            results = detections_to_coco(outputs, [image_id], val_set.label_to_category)
            # results["bbox"] and results["segm"] are parallel lists.
            for k, box in enumerate(results["bbox"]):
                detection = dict(box)
                if results["segm"]:
                    detection["segmentation"] = results["segm"][k]["segmentation"]
                detections.append(detection)
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


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="python -m enl_experiments.main.torch_job")
    commands = parser.add_subparsers(dest="command", required=True)
    predict_parser = commands.add_parser("predict")
    predict_parser.add_argument("--out", required=True)
    predict_parser.add_argument("--query", action="append", default=[], help="IMAGE_ID:X:Y")
    args = parser.parse_args(argv[:split])
    predict(args.out, argv[split + 1:], _queries(args.query))
    return 0


if __name__ == "__main__":
    sys.exit(main())
