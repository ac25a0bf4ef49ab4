"""The effective reach of a trained Model Garden detector's FPN features.

For each validation image, the gradient of one feature of every FPN level (at
mid-height and at ``position`` along the width, the centre by default; summed
over its channels) with respect to the input pixels, in
[0, 1] units (Model Garden's parser normalises by ``STDDEV_NORM`` per
channel; the gradient is taken through that), summed over ``count`` images;
then :func:`enl_experiments.main.erf.level_reach`: the horizontal distances
holding 50%, 90% and 99% of its mass and the farthest pixel with any
gradient. For the baseline the farthest pixel stays within the theoretical
reach of :mod:`enl_experiments.main.reach` (plus nearest upsampling's offset);
a non-local block can make it the whole image, and the fractions say how much
of the feature actually depends on far pixels.

Run in its own process (TensorFlow only), on a main-job run's model folder::

    python -m enl_experiments.main.erf_garden \\
        --model-dir results/latest/runs/baseline-seed0/model --variant baseline \\
        [--val-pattern 'data/.../tfrecords/val2017-*'] [--count 4]

It prints the result as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from enl_experiments.main.erf import feature_column, level_reach
from enl_experiments.main.reach import theoretical_reach
from enl_experiments.main.variants import GARDEN_EXPERIMENTS, VARIANTS


def measure(model_dir: str, variant: str, val_pattern: str | None = None,
            count: int = 4, position: float = 0.5) -> dict:
    """``{"P<l>": reach}`` of the trained model in ``model_dir``, and ``"images"``.

    ``position``: where along the width the feature sits (0.5: the centre, as
    :mod:`enl_experiments.main.erf_torch`; 0.125 on a 512 px strip leaves
    distances up to 450 px to measure). Each level also reports
    ``"mass_beyond"``: the share of the gradient's mass farther than the
    baseline's theoretical reach at P2 (:func:`enl_experiments.main.reach.theoretical_reach`
    of the run's ResNet).

    Raises:
        ValueError: naming `variant` or `count` and the value received.
        FileNotFoundError: naming `model_dir` when it holds no checkpoint.
    """
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {VARIANTS}, received {variant!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"`count` must be a positive integer, received {count!r}")
    feature_column(2, position)  # raises naming `position` when out of [0, 1]
    import tensorflow as tf
    from official.core import task_factory
    from official.vision.ops import preprocess_ops

    from enl_experiments.main import garden_job

    params = garden_job.load_params(model_dir, GARDEN_EXPERIMENTS[variant])
    if val_pattern:
        params.override({"task": {"validation_data": {"input_path": val_pattern}}},
                        is_strict=True)
    params.task.validation_data.drop_remainder = False  # every image, as garden_job.predict
    checkpoint_path = tf.train.latest_checkpoint(model_dir)
    if checkpoint_path is None:
        raise FileNotFoundError(f"no checkpoint in `model_dir` {model_dir!r}")
    task = task_factory.get_task(params.task, logging_dir=None)
    model = task.build_model()
    batches = iter(task.build_inputs(params.task.validation_data))
    images, labels = next(batches)
    # Builds the variables, then reads the trained weights into them.
    model(images, anchor_boxes=labels["anchor_boxes"], image_shape=labels["image_info"][:, 1, :],
          training=False)
    garden_job.restore(model, checkpoint_path)
    image_width = int(images.shape[2])
    to_pixels = 1.0 / tf.constant(preprocess_ops.STDDEV_NORM, images.dtype)  # d norm / d pixel
    totals, widths, seen = {}, {}, set()
    while len(seen) < count:
        source_ids = [int(v) for v in np.asarray(labels["groundtruths"]["source_id"]).reshape(-1)]
        if all(source in seen for source in source_ids):
            break  # the validation reader repeats: every image has been used
        for index, source in enumerate(source_ids):
            if source in seen or len(seen) == count:
                continue
            seen.add(source)
            _add_gradients(model, images[index:index + 1], position, to_pixels, totals, widths)
        images, labels = next(batches, (None, None))
        if images is None:
            break
    if len(seen) < count:
        raise ValueError(f"`count` is {count!r} but the validation data holds only "
                         f"{len(seen)} images")
    radius = theoretical_reach(params.task.model.backbone.get().model_id)["P2"]["radius"]
    result = level_reach(totals, widths, image_width, position, beyond=radius)
    result.update(images=len(seen), position=position, beyond_px=radius)
    return result


def _add_gradients(model, image, position, to_pixels, totals, widths) -> None:
    """Adds |d feature / d pixels| (H, W) of one image to ``totals``, per level."""
    import tensorflow as tf

    with tf.GradientTape(persistent=True) as tape:
        tape.watch(image)
        features = model.backbone(image, training=False)
        if model.decoder is not None:
            features = model.decoder(features, training=False)
        centres = {f"P{level}": tf.reduce_sum(
            feature[0, feature.shape[1] // 2, feature_column(feature.shape[2], position), :])
            for level, feature in features.items()}
    for level, centre in centres.items():
        gradient = tape.gradient(centre, image)[0] * to_pixels  # H, W, 3
        magnitude = np.abs(gradient.numpy()).astype(np.float64).sum(axis=-1)  # H, W
        totals[level] = totals.get(level, 0) + magnitude
        widths[level] = int(features[level[1:]].shape[2])
    del tape


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m enl_experiments.main.erf_garden")
    parser.add_argument("--model-dir", required=True, help="a trained run's model folder")
    parser.add_argument("--variant", required=True, choices=VARIANTS)
    parser.add_argument("--val-pattern", default=None,
                        help="validation TFRecords (default: the run's params.yaml)")
    parser.add_argument("--count", type=int, default=4, help="validation images to sum over")
    parser.add_argument("--position", type=float, default=0.5,
                        help="the feature's column as a fraction of the width (0..1)")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.model_dir, args.variant, args.val_pattern, args.count,
                             args.position), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
