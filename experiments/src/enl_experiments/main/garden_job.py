"""The TensorFlow side of the main job, run in its own process by :mod:`enl_experiments.main`.

Three subcommands, each a thin layer over Model Garden and ``enl_keras.garden``:

- ``convert --data DIR``: the COCO folder to TFRecords with Model Garden's
  ``create_coco_tf_record`` (masks included), through ``enl_keras.garden.data``.
- ``train --seed S [--predict-out DIR --query ...] [--twin-pattern P --twin-out DIR]
  -- <flags>``: seeds Python, NumPy and TensorFlow and turns on TensorFlow's op
  determinism, then runs what ``enl_keras.garden.train`` runs (Model Garden's
  ``train.main`` with the ENL registrations) with the given flags, then
  (``--predict-out``) ``predict`` in the same process, and (``--twin-out``)
  ``predict`` on the counterfactual twins of the validation images.
- ``predict``: rebuilds the trained model from ``model_dir/params.yaml``,
  restores the last checkpoint, runs it over the validation TFRecords and
  writes ``detections.json`` (COCO results, boxes and RLE masks in original
  image pixels), ``losses.json`` (the train summaries) and, for a model with
  ENL blocks, ``attention.npz`` (the attention of a query position at every
  block, the paper's Fig. 1) and ``blocks/enl_<level>.npz`` (the trained
  block weights in ``enl_core``'s interchange format).

The orchestrator never imports TensorFlow (torchvision after tensorflow
segfaults), hence a separate process and files as the interface.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from pathlib import Path

import numpy as np

from enl_core.coco import encode_mask


def convert(data_dir: str, out_dir: str, num_shards: int = 1,
            splits: tuple[str, ...] = ("train2017", "val2017")) -> dict:
    from enl_keras.garden.data import convert_coco_folder

    return convert_coco_folder(data_dir, out_dir, splits=splits, num_shards=num_shards)


def make_deterministic(seed: int) -> None:
    """Seeds Python, NumPy and TensorFlow and makes TensorFlow's ops deterministic.

    With op determinism on, TensorFlow picks deterministic kernels (or raises
    where an op has none) and runs tf.data's stateful, parallel steps in a
    fixed order, so the same seed and inputs give the same weights; the input
    pipeline's own shuffle seed is ``task.train_data.seed`` (the runner sets
    it to the same seed).
    """
    import tensorflow as tf
    import tf_keras

    # Model Garden does not seed weight initialisation; the models of a
    # comparison must start from the same seed.
    tf_keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train(seed: int, flags: list[str]) -> None:
    from absl import flags as absl_flags
    from official.common import flags as tfm_flags
    from official.vision import train as vision_train

    from enl_keras.garden import registry_imports  # noqa: F401  (registers the ENL parts)

    make_deterministic(seed)
    # enl_keras.garden.train's steps without absl.app.run (which exits the
    # process), so that prediction can follow in this process.
    tfm_flags.define_flags()
    absl_flags.FLAGS(["enl_keras.garden.train", *flags])
    for name in ("experiment", "mode", "model_dir"):
        if not absl_flags.FLAGS[name].value:
            raise ValueError(f"Model Garden flag --{name} is required")
    vision_train.main(None)


def read_losses(model_dir: str, subdir: str = "train") -> dict:
    """``{tag: {"step": [...], "value": [...]}}`` from the event files of ``subdir``."""
    import tensorflow as tf

    history: dict[str, dict[str, list]] = {}
    for path in sorted(glob.glob(os.path.join(model_dir, subdir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.HasField("tensor"):
                    number = float(tf.make_ndarray(value.tensor))
                else:
                    number = float(value.simple_value)
                series = history.setdefault(value.tag, {"step": [], "value": []})
                series["step"].append(int(event.step))
                series["value"].append(number)
    return history


def load_params(model_dir: str, experiment: str):
    """The run's full config: ``experiment``'s defaults overridden by ``model_dir/params.yaml``."""
    from official.core import exp_factory
    from official.modeling import hyperparams
    from official.vision import registry_imports  # noqa: F401

    from enl_keras.garden import registry_imports as enl_registry  # noqa: F401

    params = exp_factory.get_exp_config(experiment)
    return hyperparams.override_params_dict(params, os.path.join(model_dir, "params.yaml"),
                                            is_strict=True)


def _block_inputs_model(model):
    """A model from the backbone's features to the inputs of the decoder's blocks."""
    import tf_keras

    decoder = model.decoder
    blocks = getattr(decoder, "blocks", None)
    if not blocks:
        return None, {}
    levels = sorted(blocks, reverse=True)
    # decoder.input keeps the decoder's dict-of-levels structure (decoder.inputs is a list).
    inputs_model = tf_keras.Model(decoder.input, [blocks[level].input for level in levels])
    return inputs_model, {level: blocks[level] for level in levels}


def restore(model, checkpoint_path: str) -> None:
    """Reads the trained weights of a built ``model`` (its variables exist) from
    ``checkpoint_path``; every model variable must be in the checkpoint."""
    import tensorflow as tf

    status = tf.train.Checkpoint(model=model).read(checkpoint_path)
    status.assert_existing_objects_matched()
    status.expect_partial()  # the optimizer's slots are not needed here


def predict(model_dir: str, experiment: str, out_dir: str, queries: list[tuple[int, float, float]],
            val_pattern: str | None = None) -> None:
    import tensorflow as tf
    from official.core import task_factory
    from official.vision.ops import mask_ops

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = load_params(model_dir, experiment)
    if val_pattern:
        params.override({"task": {"validation_data": {"input_path": val_pattern}}},
                        is_strict=True)
    params.task.validation_data.drop_remainder = False
    task = task_factory.get_task(params.task, logging_dir=None)
    model = task.build_model()
    checkpoint_path = tf.train.latest_checkpoint(model_dir)
    if checkpoint_path is None:
        raise FileNotFoundError(f"no checkpoint in `model_dir` {model_dir!r}")
    dataset = task.build_inputs(params.task.validation_data)
    inputs_model, blocks = _block_inputs_model(model)
    query_by_image = {image_id: (x, y) for image_id, x, y in queries}
    detections, attention, seen = [], {}, set()
    restored = False
    for images, labels in dataset:
        image_info = labels["image_info"].numpy()  # B, 4, 2: original, scaled, scale, offset
        source_ids = [int(s) for s in np.asarray(labels["groundtruths"]["source_id"]).reshape(-1)]
        if all(s in seen for s in source_ids):
            break  # the validation reader repeats; one pass is enough
        outputs = model(images, anchor_boxes=labels["anchor_boxes"],
                        image_shape=labels["image_info"][:, 1, :], training=False)
        if not restored:
            # Variables exist now; restore and recompute with the trained weights.
            restore(model, checkpoint_path)
            restored = True
            outputs = model(images, anchor_boxes=labels["anchor_boxes"],
                            image_shape=labels["image_info"][:, 1, :], training=False)
        boxes = outputs["detection_boxes"].numpy()  # B, K, 4 as y0, x0, y1, x1 (scaled)
        scores = outputs["detection_scores"].numpy()
        classes = outputs["detection_classes"].numpy()
        counts = outputs["num_detections"].numpy()
        masks = outputs["detection_masks"].numpy() if "detection_masks" in outputs else None
        for b, image_id in enumerate(source_ids):
            if image_id in seen:
                continue
            seen.add(image_id)
            height, width = (int(v) for v in image_info[b, 0])
            scale = image_info[b, 2]  # (y, x)
            count = int(counts[b])
            y0, x0, y1, x1 = (boxes[b, :count] / np.tile(scale, 2)).T
            xywh = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)
            pasted = (mask_ops.paste_instance_masks(masks[b, :count], xywh, height, width)
                      if masks is not None and count else None)
            for k in range(count):
                detection = {"image_id": image_id, "category_id": int(classes[b, k]),
                             "bbox": [round(float(v), 2) for v in xywh[k]],
                             "score": round(float(scores[b, k]), 5)}
                if pasted is not None:
                    detection["segmentation"] = encode_mask(pasted[k] > 0.5)
                detections.append(detection)
            if blocks and image_id in query_by_image:
                attention[image_id] = _attention(model, inputs_model, blocks, images[b:b + 1],
                                                 query_by_image[image_id], scale, image_info[b])
    (out / "detections.json").write_text(json.dumps(detections))
    (out / "losses.json").write_text(json.dumps(read_losses(model_dir)))
    # Model Garden's own COCO evaluation (train_and_eval), kept as a cross-check.
    (out / "garden_eval.json").write_text(json.dumps(read_losses(model_dir, "validation")))
    if blocks:
        block_dir = out / "blocks"
        block_dir.mkdir(exist_ok=True)
        for layer in blocks.values():
            if hasattr(layer, "save_npz"):
                layer.save_npz(str(block_dir / f"{layer.name}.npz"))
        arrays = {}
        for image_id, per_level in attention.items():
            for level, (grid, query, attention_map) in per_level.items():
                prefix = f"image{image_id}_level{level}"
                arrays[f"{prefix}_map"] = attention_map
                arrays[f"{prefix}_query"] = np.asarray(query)
                arrays[f"{prefix}_grid"] = np.asarray(grid)
        np.savez(out / "attention.npz", **arrays)
    print(f"wrote {len(detections)} detections for {len(seen)} images to {out}")


def _attention(model, inputs_model, blocks, image, query_xy, scale, info):
    """Attention of the query pixel at every block: {level: (grid, (row, col), map)}."""
    features = model.backbone(image, training=False)
    block_inputs = inputs_model(features, training=False)
    if not isinstance(block_inputs, (list, tuple)):
        block_inputs = [block_inputs]
    result = {}
    x, y = query_xy
    for (level, layer), feature in zip(blocks.items(), block_inputs, strict=True):
        grid = tuple(int(v) for v in feature.shape[1:3])
        stride = 2 ** level
        row = min(int(y * scale[0] // stride), grid[0] - 1)
        col = min(int(x * scale[1] // stride), grid[1] - 1)
        attention_map = np.asarray(layer.attention_map(feature, (row, col)))[0]
        result[level] = (grid, (row, col), attention_map)
    return result


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        # Everything after `--` goes to Model Garden's flags untouched.
        parser = argparse.ArgumentParser(prog="python -m enl_experiments.main.garden_job train")
        parser.add_argument("--seed", type=int, required=True)
        parser.add_argument("--predict-out", default=None,
                            help="after training, predict into this folder (as `predict`)")
        parser.add_argument("--query", action="append", default=[], help="IMAGE_ID:X:Y")
        parser.add_argument("--twin-pattern", default=None,
                            help="TFRecords of the counterfactual twins of the validation set")
        parser.add_argument("--twin-out", default=None,
                            help="predict the twins (--twin-pattern) into this folder")
        split = argv.index("--") if "--" in argv else len(argv)
        args = parser.parse_args(argv[1:split])
        garden_flags = argv[split + 1:]
        if bool(args.twin_pattern) != bool(args.twin_out):
            parser.error("`--twin-pattern` and `--twin-out` go together, received "
                         f"{args.twin_pattern!r} and {args.twin_out!r}")
        train(args.seed, garden_flags)
        if args.predict_out:
            from absl import flags as absl_flags

            predict(absl_flags.FLAGS.model_dir, absl_flags.FLAGS.experiment, args.predict_out,
                    _queries(args.query))
        if args.twin_out:
            from absl import flags as absl_flags

            predict(absl_flags.FLAGS.model_dir, absl_flags.FLAGS.experiment, args.twin_out,
                    [], args.twin_pattern)
        return 0
    parser = argparse.ArgumentParser(prog="python -m enl_experiments.main.garden_job")
    commands = parser.add_subparsers(dest="command", required=True)
    convert_parser = commands.add_parser("convert")
    convert_parser.add_argument("--data", required=True)
    convert_parser.add_argument("--out", required=True)
    convert_parser.add_argument("--num-shards", type=int, default=1)
    convert_parser.add_argument("--splits", nargs="+", default=["train2017", "val2017"])
    predict_parser = commands.add_parser("predict")
    predict_parser.add_argument("--model-dir", required=True)
    predict_parser.add_argument("--experiment", required=True)
    predict_parser.add_argument("--out", required=True)
    predict_parser.add_argument("--val-pattern", default=None)
    predict_parser.add_argument("--query", action="append", default=[],
                                help="IMAGE_ID:X:Y, a query pixel for the attention maps")
    commands.add_parser("train", help="--seed S -- <enl_keras.garden.train flags>")
    args = parser.parse_args(argv)
    if args.command == "convert":
        print(json.dumps(convert(args.data, args.out, args.num_shards, tuple(args.splits))))
    else:
        predict(args.model_dir, args.experiment, args.out, _queries(args.query),
                args.val_pattern)
    return 0


def _queries(texts: list[str]) -> list[tuple[int, float, float]]:
    queries = []
    for text in texts:
        try:
            image_id, x, y = text.split(":")
            queries.append((int(image_id), float(x), float(y)))
        except ValueError as error:
            raise ValueError(f"`--query` must be IMAGE_ID:X:Y, received {text!r}") from error
    return queries


if __name__ == "__main__":
    sys.exit(main())
