"""``python -m enl_torch.train``: data, batch plan, schedule, COCO evaluation,
a short overfitting run, an exact resume and a two-process DDP step, on the
project's generated COCO-format dataset (``enl_experiments.dataset``) at 64 x 64."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from enl_core.coco import METRICS, evaluate_with_summary
from enl_core.testing import assert_close
from enl_experiments.dataset import generate_dataset
from enl_torch import train
from enl_torch.data.coco import CocoDetection, find_split
from enl_torch.detection import fasterrcnn_enl_resnet_fpn
from enl_torch.training.checkpoint import load_checkpoint, rng_state, set_rng_state
from enl_torch.training.engine import BatchPlan, rank_micro_batches
from enl_torch.training.evaluation import detections_to_coco
from enl_torch.training.schedule import WarmupMultiStep, warmup_multistep_scheduler

# pycocotools 2.x calls np.array(copy=False) on numpy 2: harmless, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# CPU-sized: 64 x 64 images, frozen backbone, few proposals (~2-5 s a step on 2 cores).
FAST = ["--min-size", "64", "--max-size", "64", "--trainable-backbone-layers", "0",
        "--lr", "0.005", "--warmup-steps", "0",
        "--model-kwarg", "rpn_pre_nms_top_n_train=100",
        "--model-kwarg", "rpn_post_nms_top_n_train=50",
        "--model-kwarg", "rpn_batch_size_per_image=64",
        "--model-kwarg", "box_batch_size_per_image=32",
        "--model-kwarg", "rpn_pre_nms_top_n_test=50",
        "--model-kwarg", "rpn_post_nms_top_n_test=20",
        "--model-kwarg", "box_detections_per_img=10"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Two training and two validation images (one without objects)."""
    root = tmp_path_factory.mktemp("beach")
    generate_dataset(root, num_train=2, num_val=2, image_size=64, seed=0)
    return root


def read_log(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- data -------------------------------------------------------------------

def test_dataset_targets_agree_with_the_annotations(data_dir):
    dataset = CocoDetection(*find_split(str(data_dir), "train2017"), train=True)
    assert len(dataset) == 2 and dataset.num_classes == 4
    for index in range(len(dataset)):
        image, target = dataset[index]
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        annotations = dataset.coco.loadAnns(dataset.coco.getAnnIds(dataset.image_ids[index]))
        assert len(target["boxes"]) == len(annotations) > 0
        for box, mask, label, annotation in zip(target["boxes"], target["masks"],
                                                target["labels"], annotations, strict=True):
            x, y, w, h = annotation["bbox"]
            assert box.tolist() == [x, y, x + w, y + h]
            assert dataset.label_to_category[int(label)] == annotation["category_id"]
            rows, cols = np.nonzero(mask.numpy())
            assert rows.size > 0  # the mask lies within its box
            assert x - 1 <= cols.min() and cols.max() <= x + w and y - 1 <= rows.min()
            assert rows.max() <= y + h


def test_rle_masks_and_crowd_regions(data_dir, tmp_path):
    """The same objects written as RLE decode to the same masks; a crowd region
    is not a training target."""
    images_dir, annotation_file = find_split(str(data_dir), "train2017")
    document = json.loads(open(annotation_file).read())
    for annotation in document["annotations"]:
        image = next(i for i in document["images"] if i["id"] == annotation["image_id"])
        rles = mask_utils.frPyObjects(annotation["segmentation"], image["height"],
                                      image["width"])
        rle = mask_utils.merge(rles)
        rle["counts"] = rle["counts"].decode("ascii")
        annotation["segmentation"] = rle
    crowd = dict(document["annotations"][0], id=10_000, iscrowd=1)
    document["annotations"].append(crowd)
    rle_file = tmp_path / "instances_rle.json"
    rle_file.write_text(json.dumps(document))
    polygons = CocoDetection(images_dir, annotation_file, train=True)
    rle = CocoDetection(images_dir, str(rle_file), train=True)
    for index in range(len(polygons)):
        _, expected = polygons[index]
        _, actual = rle[index]
        assert torch.equal(actual["masks"], expected["masks"])
        assert torch.equal(actual["boxes"], expected["boxes"])


def test_flips_depend_on_seed_epoch_and_index_only(data_dir):
    split = find_split(str(data_dir), "train2017")
    flipped = CocoDetection(*split, train=True, hflip_prob=1.0, seed=3)
    plain = CocoDetection(*split, train=True)
    image, target = flipped[1]
    reference_image, reference = plain[1]
    assert torch.equal(image, reference_image.flip(-1))
    assert torch.equal(target["masks"], reference["masks"].flip(-1))
    x0, y0, x1, y1 = reference["boxes"].unbind(1)
    assert torch.equal(target["boxes"], torch.stack([64 - x1, y0, 64 - x0, y1], dim=1))

    coin = CocoDetection(*split, train=True, hflip_prob=0.5, seed=3)
    draws = []
    for epoch in range(8):
        coin.set_epoch(epoch)
        draws.append(tuple(coin._flip(i) for i in range(2)))
    again = CocoDetection(*split, train=True, hflip_prob=0.5, seed=3)
    again.set_epoch(5)
    assert tuple(again._flip(i) for i in range(2)) == draws[5]
    assert len(set(draws)) > 1


def _edited_annotations(data_dir, tmp_path, edit):
    images_dir, annotation_file = find_split(str(data_dir), "train2017")
    document = json.loads(open(annotation_file).read())
    edit(document)
    path = tmp_path / "instances_edited.json"
    path.write_text(json.dumps(document))
    return images_dir, str(path), document


def test_boxes_outside_the_image_are_dropped_when_the_dataset_is_opened(data_dir, tmp_path):
    """A box that clamping would make empty is no target: the reader drops it with a
    warning naming it (enl_core.coco's rule, as the Model Garden converter), not a
    torchvision error steps later; a box crossing the border is clamped and kept."""
    def move(document):
        document["annotations"][0]["bbox"] = [70.0, 10.0, 5.0, 5.0]  # right of 64 px
        document["annotations"][1]["bbox"][2] = 200.0  # crosses the right border
    images_dir, path, document = _edited_annotations(data_dir, tmp_path, move)
    outside, crossing = document["annotations"][:2]
    with pytest.warns(UserWarning, match=rf"dropped 1 of .*image {outside['image_id']} "
                                         rf"annotation {outside['id']} "):
        dataset = CocoDetection(images_dir, path, train=True)
    assert list(dataset.annotation_check.dropped) == [outside["id"]]
    for index, image_id in enumerate(dataset.image_ids):
        _, target = dataset[index]
        boxes = target["boxes"]
        assert bool(((boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)).all())
        kept = [a for a in document["annotations"]
                if a["image_id"] == image_id and a["id"] != outside["id"]]
        assert len(boxes) == len(kept)
        if image_id == crossing["image_id"]:
            assert float(boxes[:, 2].max()) == 64.0


def test_malformed_annotations_fail_when_the_dataset_is_opened(data_dir, tmp_path):
    def corrupt(document):
        document["annotations"][0]["bbox"][3] = -2.0
        document["annotations"][1]["category_id"] = 77
    images_dir, path, document = _edited_annotations(data_dir, tmp_path, corrupt)
    first, second = document["annotations"][:2]
    with pytest.raises(ValueError, match="2 malformed entries") as error:
        CocoDetection(images_dir, path, train=True)
    assert f"image {first['image_id']} annotation {first['id']}: bbox" in str(error.value)
    assert f"annotation {second['id']}: unknown category_id 77" in str(error.value)


def test_missing_split_raises(data_dir):
    with pytest.raises(FileNotFoundError, match="instances_test2017.json"):
        find_split(str(data_dir), "test2017")


# --- batch plan, schedule, RNG ---------------------------------------------

@pytest.mark.parametrize(("batch_size", "world_size"), [(1, 2), (2, 2), (1, 4)])
def test_batch_plan_is_the_same_on_any_number_of_processes(batch_size, world_size):
    """World size W x accumulation 1 reads the same micro-batches as 1 x W."""
    distributed = BatchPlan(11, batch_size, 1, world_size, seed=7)
    single = BatchPlan(11, batch_size, world_size, 1, seed=7)
    assert distributed.steps_per_epoch == single.steps_per_epoch == 11 // (batch_size * world_size)
    for step in range(3 * single.steps_per_epoch):
        merged = sorted(mb for rank in range(world_size)
                        for mb in distributed.micro_batches(step, rank))
        assert merged == single.micro_batches(step, 0)
        images = [i for _, indices in merged for i in indices]
        assert len(set(images)) == len(images) == batch_size * world_size
    epoch_images = [i for step in range(single.steps_per_epoch)
                    for _, indices in single.micro_batches(step, 0) for i in indices]
    assert len(set(epoch_images)) == len(epoch_images)  # no image twice in an epoch
    assert single.order(0) != single.order(1)


def test_loaded_micro_batches_do_not_depend_on_workers_or_the_start(data_dir):
    """Flips and order come from (seed, epoch, index): two worker processes, or a
    stream started at step 3, load exactly what one process loads."""
    split = find_split(str(data_dir), "train2017")
    plan = BatchPlan(2, 1, 1, 1, seed=4)

    def stream(workers, start):
        dataset = CocoDetection(*split, train=True, hflip_prob=0.5, seed=4)
        return rank_micro_batches(dataset, plan, rank=0, start_step=start, workers=workers)

    main_process, with_workers, resumed = stream(0, 0), stream(2, 0), stream(0, 3)
    for step in range(6):
        expected = next(main_process)
        actual = [next(with_workers)] + ([next(resumed)] if step >= 3 else [])
        for batches in actual:
            for mine, theirs in zip(batches, expected, strict=True):
                assert mine.number == theirs.number
                for a, e in zip(mine.images + [t["masks"] for t in mine.targets],
                                theirs.images + [t["masks"] for t in theirs.targets],
                                strict=True):
                    assert torch.equal(a, e)


def test_batch_plan_needs_one_global_batch():
    with pytest.raises(ValueError, match="fewer than one global batch"):
        BatchPlan(3, 2, 1, 2, seed=0)
    with pytest.raises(ValueError, match="`grad_accumulation` must be a positive int"):
        BatchPlan(3, 1, 0, 1, seed=0)


def test_warmup_multistep_schedule_and_its_state():
    schedule = WarmupMultiStep(warmup_steps=4, warmup_factor=0.2, milestones=[6, 8], gamma=0.5)
    assert [schedule(s) for s in (0, 2, 4, 5, 6, 7, 8)] == pytest.approx(
        [0.2, 0.6, 1.0, 1.0, 0.5, 0.5, 0.25])
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler = warmup_multistep_scheduler(optimizer, warmup_steps=4, warmup_factor=0.2,
                                           milestones=[6, 8], gamma=0.5)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    fresh_optimizer = torch.optim.SGD([parameter], lr=1.0)
    fresh = warmup_multistep_scheduler(fresh_optimizer)
    fresh.load_state_dict(state)
    fresh_optimizer.load_state_dict(optimizer.state_dict())
    for _ in range(3):
        optimizer.step()
        scheduler.step()
        fresh_optimizer.step()
        fresh.step()
        assert fresh.get_last_lr() == scheduler.get_last_lr()
    with pytest.raises(ValueError, match="`milestones`"):
        WarmupMultiStep(milestones=[5, 3])


def test_rng_state_round_trip():
    import random

    state = rng_state()
    first = (random.random(), np.random.random(), torch.rand(3))  # noqa: NPY002
    set_rng_state(state)
    second = (random.random(), np.random.random(), torch.rand(3))  # noqa: NPY002
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])


# --- evaluation ---------------------------------------------------------------

def test_ground_truth_as_detections_scores_ap_one(data_dir):
    """detections_to_coco is COCO's format: the ground truth itself scores AP 1."""
    dataset = CocoDetection(*find_split(str(data_dir), "val2017"))
    outputs, image_ids = [], []
    for index in range(len(dataset)):
        _, target = dataset[index]
        n = len(target["boxes"])
        outputs.append({"boxes": target["boxes"], "labels": target["labels"],
                        "scores": torch.linspace(1.0, 0.5, n),
                        "masks": target["masks"][:, None].float()})
        image_ids.append(int(target["image_id"]))
    results = detections_to_coco(outputs, image_ids, dataset.label_to_category)
    scores, summaries = evaluate_with_summary(dataset.coco, results, ("bbox", "segm"))
    for iou_type in ("bbox", "segm"):
        assert set(scores[iou_type]) == {*METRICS, "per_category"}
        assert scores[iou_type]["AP"] == pytest.approx(100.0)
        assert scores[iou_type]["AP50"] == pytest.approx(100.0)
        assert "Average Precision" in summaries[iou_type]
    nothing, _ = evaluate_with_summary(dataset.coco, [], ("bbox",))
    assert nothing["bbox"]["AP"] == 0.0


# --- the training entry ---------------------------------------------------------

@pytest.fixture(scope="module")
def overfit_run(data_dir, tmp_path_factory):
    """Four steps on the two training images, checkpoints at 2 and 4, then COCO eval."""
    output = tmp_path_factory.mktemp("overfit")
    args = ["--data-dir", str(data_dir), "--output-dir", str(output), "--steps", "4",
            "--batch-size", "2", "--checkpoint-every", "2", "--seed", "1", "--clip-grad-norm", "5",
            *FAST]
    assert train.main(args) == 0
    return output, args


def test_losses_are_finite_and_fall_when_overfitting_two_images(overfit_run):
    output, _ = overfit_run
    log = read_log(output / "log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(r["lr"] == 0.005 for r in log)  # no warm-up, no milestones
    names = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness",
             "loss_rpn_box_reg"}
    for record in log:
        assert names <= set(record) and all(math.isfinite(record[k]) for k in names | {"loss"})
        assert record["loss"] == pytest.approx(sum(record[k] for k in names), rel=1e-5)
    losses = [r["loss"] for r in log]
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses


def test_evaluation_writes_coco_metrics(overfit_run):
    output, _ = overfit_run
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["step"] == 4 and metrics["num_images"] == 2
    for iou_type in ("bbox", "segm"):  # percent; None where COCO defines no value
        assert set(metrics[iou_type]) == {*METRICS, "per_category"}
        assert all(v is None or 0.0 <= v <= 100.0 for k, v in metrics[iou_type].items()
                   if k != "per_category")
    assert read_log(output / "metrics.jsonl")[-1] == metrics


def test_resume_repeats_the_uninterrupted_run_exactly(overfit_run, tmp_path):
    output, args = overfit_run
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(output / "checkpoints" / "step_0000002.pt", tmp_path / "checkpoints")
    resumed_args = [*args, "--output-dir", str(tmp_path), "--resume", "latest", "--no-eval"]
    assert train.main(resumed_args) == 0
    assert [r["step"] for r in read_log(tmp_path / "log.jsonl")] == [3, 4]
    for mine, theirs in zip(read_log(tmp_path / "log.jsonl"), read_log(output / "log.jsonl")[2:],
                            strict=True):
        assert {k: v for k, v in mine.items() if k != "seconds"} == {
            k: v for k, v in theirs.items() if k != "seconds"}
    resumed = load_checkpoint(str(tmp_path / "checkpoints" / "step_0000004.pt"))
    straight = load_checkpoint(str(output / "checkpoints" / "step_0000004.pt"))
    assert resumed["step"] == straight["step"] == 4
    assert resumed["model"].keys() == straight["model"].keys()
    for key, value in straight["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    for index, state in straight["optimizer"]["state"].items():
        assert torch.equal(resumed["optimizer"]["state"][index]["momentum_buffer"],
                           state["momentum_buffer"])
    assert resumed["lr_scheduler"] == straight["lr_scheduler"]
    assert resumed["rng"][0]["torch"] == straight["rng"][0]["torch"]


def test_eval_only_reproduces_the_metrics_of_the_run(overfit_run, tmp_path):
    output, args = overfit_run
    assert train.main([*args, "--output-dir", str(tmp_path), "--eval-only", "--resume",
                       str(output / "checkpoints" / "step_0000004.pt")]) == 0
    again = json.loads((tmp_path / "metrics.json").read_text())
    original = json.loads((output / "metrics.json").read_text())
    for key in ("step", "bbox", "segm", "num_detections"):
        assert again[key] == original[key], key


def test_faster_rcnn_evaluates_boxes_from_a_weights_file(data_dir, tmp_path):
    torch.manual_seed(0)
    model = fasterrcnn_enl_resnet_fpn(variant="baseline", num_classes=4)
    torch.save(model.state_dict(), tmp_path / "faster.pt")
    assert train.main(["--data-dir", str(data_dir), "--output-dir", str(tmp_path),
                       "--model", "fasterrcnn_enl_resnet_fpn", "--variant", "3enl_td",
                       "--weights", str(tmp_path / "faster.pt"), "--eval-only", *FAST]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) >= {"bbox", "num_images", "num_detections"} and "segm" not in metrics
    assert set(metrics["bbox"]) == {*METRICS, "per_category"}


def test_resume_refuses_other_settings(overfit_run, tmp_path, capsys):
    output, args = overfit_run
    changed = [*args, "--output-dir", str(tmp_path), "--resume",
               str(output / "checkpoints" / "step_0000002.pt"), "--variant", "baseline"]
    assert train.main(changed) == 2
    assert "`--resume` checkpoint was trained with other settings: ['variant']" in (
        capsys.readouterr().err)


def test_model_flags_build_the_main_jobs_cpu_detector(data_dir, tmp_path):
    """--backbone resnet18 --fpn-channels 64 --block-input-norm reach the builder."""
    from enl_torch.detection.fpn import ChannelLayerNorm, NormalizedInputBlock

    base = ["--data-dir", str(data_dir), "--output-dir", str(tmp_path), "--backbone", "resnet18",
            "--fpn-channels", "64"]
    args = train.build_parser().parse_args([*base, "--block-input-norm"])
    model = train.build_model(args, num_classes=4)
    assert model.backbone.out_channels == 64
    wrapped = [m for m in model.backbone.fpn.top_down_blocks
               if isinstance(m, NormalizedInputBlock)]
    assert len(wrapped) == 3 and all(m.block.in_channels == 64 for m in wrapped)
    plain = train.build_model(train.build_parser().parse_args(base), num_classes=4)
    assert not any(isinstance(m, NormalizedInputBlock) for m in plain.modules())
    defaults = train.build_parser().parse_args(base[:4])
    assert (defaults.block_input_norm, defaults.fpn_channels) == (False, 256)
    assert defaults.block_norm == "batch" and isinstance(wrapped[0].norm, torch.nn.BatchNorm2d)
    layer = train.build_model(train.build_parser().parse_args(
        [*base, "--block-input-norm", "--block-norm", "layer"]), num_classes=4)
    norms = [m.norm for m in layer.backbone.fpn.top_down_blocks
             if isinstance(m, NormalizedInputBlock)]
    assert len(norms) == 3 and all(isinstance(n, ChannelLayerNorm) for n in norms)


def test_resume_checks_the_new_model_flags(overfit_run, tmp_path, capsys):
    output, args = overfit_run
    saved = load_checkpoint(str(output / "checkpoints" / "step_0000002.pt"))["config"]
    parsed = train.build_parser().parse_args(args)
    # A checkpoint from before the flags existed was trained with their defaults.
    older = {k: v for k, v in saved.items() if k not in ("block_input_norm", "fpn_channels")}
    train._check_resumable(older, parsed, world_size=1)
    with pytest.raises(ValueError, match=r"\['block_input_norm', 'fpn_channels'\]"):
        train._check_resumable(older, train.build_parser().parse_args(
            [*args, "--block-input-norm", "--fpn-channels", "64"]), world_size=1)
    changed = [*args, "--output-dir", str(tmp_path), "--resume",
               str(output / "checkpoints" / "step_0000002.pt"), "--block-input-norm"]
    assert train.main(changed) == 2
    assert "other settings: ['block_input_norm']" in capsys.readouterr().err


GARDEN_FLAGS = ["--anchor-sizes", "8", "16", "32", "64", "128", "--aspect-ratios", "0.5", "1", "2",
                "--box-head-fc-dims", "256", "--mask-head-channels", "64", "64",
                "--model-kwarg", "rpn_post_nms_top_n_train=256",
                "--model-kwarg", "box_batch_size_per_image=128",
                "--model-kwarg", "box_detections_per_img=50"]


def test_detector_size_flags_reach_the_model(data_dir, tmp_path):
    """--anchor-sizes / --aspect-ratios / --box-head-fc-dims / --mask-head-channels
    build the parts; scalars go through --model-kwarg; defaults are torchvision's."""
    base = ["--data-dir", str(data_dir), "--output-dir", str(tmp_path), "--backbone", "resnet18",
            "--fpn-channels", "64"]
    with torch.device("meta"):
        model = train.build_model(train.build_parser().parse_args([*base, *GARDEN_FLAGS]), 4)
        plain = train.build_model(train.build_parser().parse_args(base), 4)
        faster = train.build_model(train.build_parser().parse_args(
            [*base, "--model", "fasterrcnn_enl_resnet_fpn", "--box-head-fc-dims", "128"]), 4)
    assert model.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,), (128,))
    assert all(type(s[0]) is int for s in model.rpn.anchor_generator.sizes)
    assert model.roi_heads.box_predictor.cls_score.in_features == 256
    assert [m[0].out_channels for m in model.roi_heads.mask_head] == [64, 64]
    assert model.rpn._post_nms_top_n["training"] == 256
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 128
    assert model.roi_heads.detections_per_img == 50
    assert plain.rpn.anchor_generator.sizes[0] == (32,)
    assert plain.roi_heads.box_head.fc6.out_features == 1024
    assert faster.roi_heads.box_predictor.cls_score.in_features == 128
    # Fractional sizes stay floats.
    fractional = train.build_parser().parse_args([*base, "--anchor-sizes", "6.5", "16", "32",
                                                  "64", "128"])
    assert train._sizes(fractional.anchor_sizes) == (6.5, 16, 32, 64, 128)


def test_cli_refuses_bad_detector_sizes(data_dir, tmp_path, capsys):
    base = ["--data-dir", str(data_dir), "--output-dir", str(tmp_path), "--steps", "1", *FAST]
    assert train.main([*base, "--anchor-sizes", "8", "16", "32", "64"]) == 2
    assert "`anchor_sizes` needs one size per feature map: the backbone returns 5 maps" in (
        capsys.readouterr().err)
    assert train.main([*base, "--model", "fasterrcnn_enl_resnet_fpn",
                       "--mask-head-channels", "64"]) == 2
    assert "`--mask-head-channels` needs a Mask R-CNN `--model`" in capsys.readouterr().err


def test_resume_checks_the_detector_size_flags(overfit_run):
    output, args = overfit_run
    saved = load_checkpoint(str(output / "checkpoints" / "step_0000002.pt"))["config"]
    names = ("anchor_sizes", "aspect_ratios", "box_head_fc_dims", "mask_head_channels")
    # Checkpoints from before the flags existed were trained with torchvision's sizes.
    older = {k: v for k, v in saved.items() if k not in names}
    train._check_resumable(older, train.build_parser().parse_args(args), world_size=1)
    with pytest.raises(ValueError, match=r"\['anchor_sizes', 'aspect_ratios', "
                                         r"'box_head_fc_dims', 'mask_head_channels', "
                                         r"'model_kwarg'\]"):
        train._check_resumable(saved, train.build_parser().parse_args(
            [*args, *GARDEN_FLAGS]), world_size=1)


def test_cli_reports_bad_input(data_dir, tmp_path, capsys):
    assert train.main(["--data-dir", str(tmp_path / "none"), "--output-dir",
                       str(tmp_path)]) == 2
    assert "no annotations for split 'val2017'" in capsys.readouterr().err
    assert train.main(["--data-dir", str(data_dir), "--output-dir", str(tmp_path),
                       "--steps", "0"]) == 2
    assert "`--steps` must be >= 1" in capsys.readouterr().err
    assert train.main(["--data-dir", str(data_dir), "--output-dir", str(tmp_path),
                       "--fpn-channels", "0"]) == 2
    assert "`--fpn-channels` must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["--data-dir", str(data_dir), "--output-dir", str(tmp_path),
                    "--model-kwarg", "no-equals-sign"])


def test_two_gloo_processes_equal_one_process_accumulating(data_dir, tmp_path):
    """DDP through ``torchrun``: two gloo processes with one image each compute the
    gradients of one process accumulating the same two one-image micro-batches
    (:mod:`enl_torch.training.engine` explains why that, and not one two-image
    forward, is the same step: torchvision normalises its losses per forward)."""
    common = ["--data-dir", str(data_dir), "--steps", "1", "--batch-size", "1",
              "--weight-decay", "0", "--no-eval", "--seed", "2", "--device", "cpu", *FAST]
    distributed_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    # One thread everywhere: CPU kernels then sum in one order in both runs, and
    # no proposal flips across an NMS / top-k boundary on a last-bit difference.
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "enl_torch.train", *common, "--threads", "1", "--output-dir", str(distributed_dir)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    threads = torch.get_num_threads()
    try:
        assert train.main([*common, "--threads", "1", "--output-dir", str(single_dir),
                           "--grad-accumulation", "2"]) == 0
    finally:
        torch.set_num_threads(threads)

    distributed = load_checkpoint(str(distributed_dir / "checkpoints" / "step_0000001.pt"))
    single = load_checkpoint(str(single_dir / "checkpoints" / "step_0000001.pt"))
    assert distributed["config"]["world_size"] == 2 and single["config"]["world_size"] == 1
    assert len(distributed["rng"]) == 2
    # SGD's first momentum buffer is the gradient (weight decay 0).
    gradients = distributed["optimizer"]["state"]
    assert gradients.keys() == single["optimizer"]["state"].keys() and len(gradients) > 50
    nonzero = 0
    for index, state in single["optimizer"]["state"].items():
        expected = state["momentum_buffer"]
        assert_close(gradients[index]["momentum_buffer"], expected, "float32", gradient=True,
                     err_msg=f"parameter {index}")
        nonzero += int(torch.count_nonzero(expected) > 0)
    assert nonzero > 0.5 * len(gradients)
    # Parameters, not BatchNorm running statistics: each rank updates those from
    # its own image (as DDP does; FrozenBatchNorm2d, the pretrained default, has none).
    for key, value in single["model"].items():
        if value.is_floating_point() and "running_" not in key:
            assert_close(distributed["model"][key], value, "float32", gradient=True, err_msg=key)


# --- faults: corrupt checkpoints, bad boxes, SIGKILL at any point ---------------

def test_a_truncated_or_empty_checkpoint_is_named(overfit_run, tmp_path, capsys):
    from enl_torch.training.checkpoint import CorruptCheckpointError

    output, args = overfit_run
    whole = (output / "checkpoints" / "step_0000002.pt").read_bytes()
    truncated, empty = tmp_path / "truncated.pt", tmp_path / "empty.pt"
    truncated.write_bytes(whole[:len(whole) // 2])
    empty.write_bytes(b"")
    with pytest.raises(CorruptCheckpointError, match=r"truncated\.pt.*truncated or corrupt"):
        load_checkpoint(str(truncated))
    with pytest.raises(CorruptCheckpointError, match=r"empty\.pt.*empty \(0 bytes\)"):
        load_checkpoint(str(empty))
    assert train.main([*args, "--output-dir", str(tmp_path), "--resume", str(truncated)]) == 2
    assert f"checkpoint {str(truncated)!r}" in capsys.readouterr().err


def test_a_small_checkpoint_cut_anywhere_is_corrupt_and_latest_falls_back(tmp_path):
    """A cut inside a small file's first zip records made torch.load raise a bare
    ``OSError: [Errno 22]``, which escaped both the named error and ``latest``'s
    fall-back. Every cut of a 37 KB checkpoint is now a CorruptCheckpointError."""
    from enl_torch.training.checkpoint import (
        CorruptCheckpointError,
        load_latest_checkpoint,
        save_checkpoint,
    )

    model = torch.nn.Linear(64, 64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(2, 64)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    for step in (1, 2):
        save_checkpoint(str(tmp_path / "checkpoints" / f"step_{step:07d}.pt"), model=model,
                        optimizer=optimizer, scheduler=scheduler, step=step, rng=[rng_state()],
                        config={})
    newest = tmp_path / "checkpoints" / "step_0000002.pt"
    whole = newest.read_bytes()
    cut = tmp_path / "cut.pt"
    for size in range(1, len(whole), 1024):
        cut.write_bytes(whole[:size])
        with pytest.raises(CorruptCheckpointError, match=r"cut\.pt"):
            load_checkpoint(str(cut))
    newest.write_bytes(whole[:len(whole) // 2])
    with pytest.warns(RuntimeWarning, match="step_0000002.pt"):
        path, payload = load_latest_checkpoint(str(tmp_path / "checkpoints"))
    assert path.endswith("step_0000001.pt") and payload["step"] == 1


def test_a_box_without_area_is_named_not_dropped():
    from enl_torch.training.engine import check_targets

    good = {"boxes": torch.tensor([[0.0, 0.0, 4.0, 5.0]]), "image_id": torch.tensor(7)}
    check_targets([good], step=3)
    # A box beyond the image's right edge, clamped to x0 = x1 = 64.
    outside = {"boxes": torch.tensor([[1.0, 1.0, 3.0, 3.0], [64.0, 2.0, 64.0, 9.0]]),
               "image_id": torch.tensor(12)}
    with pytest.raises(ValueError, match=r"image_id 12 at step 3 has 1 box.*box 1: "
                                         r"\[64\.0, 2\.0, 64\.0, 9\.0\]"):
        check_targets([good, outside], step=3)
    inverted = {"boxes": torch.tensor([[5.0, 5.0, 2.0, 9.0]]), "image_id": torch.tensor(4)}
    with pytest.raises(ValueError, match="image_id 4"):
        check_targets([inverted], step=0)


FAULT_WORKER = os.path.join(os.path.dirname(__file__), "train_fault_worker.py")
# The smallest detector the CLI builds: Faster R-CNN, ResNet-18, a 16-wide FPN with
# its three ENL blocks, one thread (CPU kernels then sum in one fixed order).
FAULT_FLAGS = ["--model", "fasterrcnn_enl_resnet_fpn", "--backbone", "resnet18",
               "--fpn-channels", "16", "--batch-size", "1", "--checkpoint-every", "1",
               "--no-eval", "--threads", "1", "--seed", "5", "--hflip-prob", "0.5", *FAST]


def _worker(spec: str, arguments: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, FAULT_WORKER, spec, "--", *arguments],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=600)


def _done_steps(output) -> int:
    names = [p.name for p in (output / "checkpoints").glob("step_*.pt")] if (
        output / "checkpoints").is_dir() else []
    return max((int(name[5:12]) for name in names), default=0)


def _kill_and_resume(data_dir, output, steps: int, kills: list[str]) -> list[str]:
    """Runs ``--resume latest`` until done, SIGKILLed at each of ``kills`` in turn
    (``KIND:N[:FRACTION]``, N counted from the run's start); returns the kills
    as they happened (``KIND@step``)."""
    arguments = ["--data-dir", str(data_dir), "--output-dir", str(output), "--steps",
                 str(steps), "--resume", "latest", *FAULT_FLAGS]
    happened = []
    for spec in [*kills, "none"]:
        before = _done_steps(output)
        completed = _worker(spec, arguments)
        if spec == "none":
            assert completed.returncode == 0, completed.stderr[-4000:]
            break
        assert completed.returncode == -signal.SIGKILL, (spec, completed.stderr[-4000:])
        happened.append(f"{spec}@{before}")
        if spec.startswith("save:"):
            partial = list((output / "checkpoints").glob("*.tmp"))
            assert len(partial) == 1 and partial[0].stat().st_size > 0, partial
            assert _done_steps(output) == before + int(spec.split(":")[1]) - 1
    return happened


def _random_kills(rng: np.random.Generator, count: int, steps: int) -> list[str]:
    """``count`` kill points, each reachable from where the previous one left the
    run; the first is during a checkpoint write."""
    kinds = ["step", "update", "save", "saved"]
    kills, done = [], 0
    for index in range(count):
        left = steps - done  # steps the next run has to do (>= 1)
        kind = "save" if index == 0 else str(rng.choice(kinds))
        if kind == "saved" and left < 2:
            kind = "update"  # dying after the last save would leave nothing to resume
        # The N-th step / save of a run resumed at `done` (rng.integers: high exclusive).
        number = int(rng.integers(1, left if kind == "saved" else left + 1))
        if kind == "save":
            kills.append(f"save:{number}:{rng.uniform(0.05, 0.95):.2f}")
        else:
            kills.append(f"{kind}:{number}")
        done += number if kind == "saved" else number - 1
    return kills


def _assert_same_training_state(output, reference, steps: int) -> None:
    name = f"step_{steps:07d}.pt"
    mine = load_checkpoint(str(output / "checkpoints" / name))
    theirs = load_checkpoint(str(reference / "checkpoints" / name))
    assert mine["step"] == theirs["step"] == steps
    assert mine["model"].keys() == theirs["model"].keys()
    for key, value in theirs["model"].items():
        assert torch.equal(mine["model"][key], value), key
    for index, state in theirs["optimizer"]["state"].items():
        assert torch.equal(mine["optimizer"]["state"][index]["momentum_buffer"],
                           state["momentum_buffer"]), index
    assert mine["lr_scheduler"] == theirs["lr_scheduler"]
    # torch's generator only: nothing seeds Python's or NumPy's, each process
    # starts them from the OS (and training draws from neither).
    assert mine["rng"][0]["torch"] == theirs["rng"][0]["torch"]


@pytest.fixture(scope="module")
def uninterrupted_fault_run(data_dir, tmp_path_factory):
    """The reference: the fault runs' command, never killed (4 steps)."""
    output = tmp_path_factory.mktemp("uninterrupted")
    completed = _worker("none", ["--data-dir", str(data_dir), "--output-dir", str(output),
                                 "--steps", "4", *FAULT_FLAGS])
    assert completed.returncode == 0, completed.stderr[-4000:]
    return output


def test_sigkill_while_saving_and_mid_update_then_resume_is_bit_exact(
        data_dir, uninterrupted_fault_run, tmp_path):
    """Killed halfway through writing checkpoint 2 (a partial temporary file on
    disk), then inside the optimizer update of the next step: ``--resume latest``
    ends with the uninterrupted run's weights, bit for bit."""
    happened = _kill_and_resume(data_dir, tmp_path, 4, ["save:2:0.5", "update:2"])
    assert happened == ["save:2:0.5@0", "update:2@1"]
    _assert_same_training_state(tmp_path, uninterrupted_fault_run, 4)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_at_random_points_then_resume_is_bit_exact(data_dir, uninterrupted_fault_run,
                                                           tmp_path, seed):
    """Five seeded kill points (the first while a checkpoint is being written; then
    any of: as a step begins, inside the update, while saving, just after saving)."""
    kills = _random_kills(np.random.default_rng(seed), 5, 4)
    happened = _kill_and_resume(data_dir, tmp_path, 4, kills)
    assert len(happened) == 5 and happened[0].startswith("save:"), happened
    _assert_same_training_state(tmp_path, uninterrupted_fault_run, 4)


def test_resume_latest_skips_corrupt_newer_checkpoints(data_dir, uninterrupted_fault_run,
                                                        tmp_path):
    """step_4 empty and step_3 truncated: ``latest`` warns about each, resumes
    from step_2 and ends with the uninterrupted run's weights."""
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    source = uninterrupted_fault_run / "checkpoints"
    shutil.copy(source / "step_0000002.pt", checkpoints)
    whole = (source / "step_0000003.pt").read_bytes()
    (checkpoints / "step_0000003.pt").write_bytes(whole[:len(whole) - 100])
    (checkpoints / "step_0000004.pt").write_bytes(b"")
    arguments = ["--data-dir", str(data_dir), "--output-dir", str(tmp_path), "--steps", "4",
                 "--resume", "latest", *FAULT_FLAGS]
    threads = torch.get_num_threads()
    try:
        with pytest.warns(RuntimeWarning, match="skipping unreadable") as warned:
            assert train.main(arguments) == 0
    finally:
        torch.set_num_threads(threads)
    skipped = [str(w.message) for w in warned if "skipping unreadable" in str(w.message)]
    assert len(skipped) == 2, skipped
    assert "step_0000004.pt" in skipped[0] and "empty" in skipped[0]
    assert "step_0000003.pt" in skipped[1] and "truncated or corrupt" in skipped[1]
    assert [r["step"] for r in read_log(tmp_path / "log.jsonl")] == [3, 4]
    _assert_same_training_state(tmp_path, uninterrupted_fault_run, 4)


# --- the train CLI's flags, bad values generated -----------------------------------

def _cli_error(argv: list[str]) -> str:
    """``train.main``'s exit status must be 2; returns what it printed to stderr."""
    stream = io.StringIO()
    with contextlib.redirect_stderr(stream):
        try:
            status = train.main(argv)
        except SystemExit as exit_:  # argparse's own refusals
            status = exit_.code
    assert status == 2, stream.getvalue()
    return stream.getvalue()


POSITIVE_FLAGS = ["--steps", "--batch-size", "--grad-accumulation", "--min-size", "--max-size",
                  "--eval-batch-size", "--log-every", "--fpn-channels", "--threads"]
NON_NEGATIVE_FLAGS = ["--checkpoint-every", "--eval-every", "--warmup-steps", "--workers"]
FLOAT_FLAGS = {"--lr": ">", "--momentum": ">=", "--weight-decay": ">=", "--gamma": ">",
               "--warmup-factor": ">", "--hflip-prob": ">=", "--clip-grad-norm": ">"}


@given(flag=st.sampled_from(POSITIVE_FLAGS), value=st.integers(-10**6, 0))
def test_generated_non_positive_int_flags(tmp_path_factory, flag, value):
    base = ["--data-dir", str(tmp_path_factory.getbasetemp()), "--output-dir",
            str(tmp_path_factory.getbasetemp())]
    assert f"`{flag}` must be >= 1, received {value}" in _cli_error([*base, f"{flag}={value}"])


@given(flag=st.sampled_from(NON_NEGATIVE_FLAGS), value=st.integers(-10**6, -1))
def test_generated_negative_int_flags(tmp_path_factory, flag, value):
    base = ["--data-dir", str(tmp_path_factory.getbasetemp()), "--output-dir",
            str(tmp_path_factory.getbasetemp())]
    assert f"`{flag}` must be >= 0, received {value}" in _cli_error([*base, f"{flag}={value}"])


@given(flag=st.sampled_from(sorted(FLOAT_FLAGS)), value=st.one_of(
    st.floats(max_value=0.0, exclude_max=False), st.just(float("nan")), st.just(float("inf"))))
def test_generated_bad_float_flags(tmp_path_factory, flag, value):
    if FLOAT_FLAGS[flag] == ">=" and value == 0.0:
        return  # 0 is allowed there
    base = ["--data-dir", str(tmp_path_factory.getbasetemp()), "--output-dir",
            str(tmp_path_factory.getbasetemp())]
    message = _cli_error([*base, f"{flag}={value}"])
    assert f"`{flag}` must be a finite number" in message and str(value) in message, message


@given(value=st.floats(1.0, 1e6, exclude_min=True))
def test_generated_hflip_prob_above_one(tmp_path_factory, value):
    base = ["--data-dir", str(tmp_path_factory.getbasetemp()), "--output-dir",
            str(tmp_path_factory.getbasetemp())]
    message = _cli_error([*base, f"--hflip-prob={value}"])
    assert f"`--hflip-prob` must be in [0, 1], received {value}" in message


@given(flag=st.sampled_from(POSITIVE_FLAGS + ["--lr", "--seed"]),
       value=st.text(alphabet="abcxyz.,#", min_size=1, max_size=4))
def test_generated_unparsable_values_are_refused_by_argparse(tmp_path_factory, flag, value):
    base = ["--data-dir", str(tmp_path_factory.getbasetemp()), "--output-dir",
            str(tmp_path_factory.getbasetemp())]
    try:
        float(value)
        return  # "." or the like may parse as a number for --lr
    except ValueError:
        pass
    message = _cli_error([*base, f"{flag}={value}"])
    assert f"argument {flag}" in message and repr(value) in message, message


@given(key=st.one_of(st.sampled_from(["foo", "box_detections_per_imgs", "anchor_sizes",
                                      "min_size"]),
                     st.from_regex(r"[a-z]{3,10}_[a-z]{3,10}", fullmatch=True)),
       value=st.integers(0, 99))
def test_generated_unknown_model_kwargs_are_refused(data_dir, key, value):
    """``--model-kwarg`` keys torchvision would swallow, and those with their own flag."""
    if key in train.builder_kwarg_names("maskrcnn_enl_resnet_fpn") and key not in {
            "anchor_sizes", "min_size"}:
        return  # a real argument of the builder
    message = _cli_error(["--data-dir", str(data_dir), "--output-dir", str(data_dir / "none"),
                          "--model-kwarg", f"{key}={value}", "--no-eval"])
    assert f"`--model-kwarg` ['{key}'] (received {{'{key}': {value}}})" in message, message
    assert "box_detections_per_img" in message  # the valid keys are listed
