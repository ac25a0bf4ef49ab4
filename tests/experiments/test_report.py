"""Evaluation, aggregation, tables, summaries and figures of the main job (no framework)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pycocotools.coco import COCO

from enl_core.coco import encode_mask, evaluate
from enl_experiments.dataset import generate_dataset
from enl_experiments.main import cli as main
from enl_experiments.main import figures, report

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("beach")
    generate_dataset(root, num_train=2, num_val=6, image_size=128, seed=1)
    return root


@pytest.fixture(scope="module")
def perfect(data):
    """Ground truth as detections: boxes and RLE masks, score 1."""
    coco = COCO(str(data / "annotations" / "instances_val2017.json"))
    results = []
    for ann in coco.dataset["annotations"]:
        results.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                        "bbox": ann["bbox"], "score": 1.0,
                        "segmentation": encode_mask(coco.annToMask(ann))})
    return results


def _val(data):
    return data / "annotations" / "instances_val2017.json"


def test_perfect_detections_on_the_embedded_data_score_100(data, perfect):
    """enl_core.coco's scoring (tested in tests/core) on the generated dataset."""
    result = evaluate(_val(data), perfect)
    for iou_type in ("bbox", "segm"):
        assert result[iou_type]["AP"] == pytest.approx(100.0)
        assert result[iou_type]["APs"] == pytest.approx(100.0)
        assert set(result[iou_type]["per_category"]) == {"person", "ball", "swimmer"}
        assert all(v == pytest.approx(100.0) for v in result[iou_type]["per_category"].values())
    # 128 px images have no large (>= 96^2) objects: COCO's -1 becomes None.
    assert result["bbox"]["APl"] is None


def _run(ap: float, aps: float, ball: float | None) -> dict:
    entry = {"AP": ap, "AP50": ap + 10, "AP75": ap - 5, "APs": aps, "APm": None, "APl": None,
             "per_category": {"person": 50.0, "ball": ball}}
    return {"bbox": entry, "segm": dict(entry)}


def test_aggregate_mean_and_sample_std():
    aggregated = report.aggregate([_run(10.0, 4.0, 1.0), _run(14.0, 8.0, None)])
    ap = aggregated["bbox"]["AP"]
    assert ap["mean"] == pytest.approx(12.0) and ap["std"] == pytest.approx(math.sqrt(8.0))
    assert aggregated["bbox"]["APm"]["mean"] is None
    ball = aggregated["bbox"]["per_category"]["ball"]
    assert ball["mean"] == 1.0 and ball["std"] is None and ball["n"] == 1
    with pytest.raises(ValueError, match="per_seed"):
        report.aggregate([])


def test_comparison_table_side_by_side_with_delta():
    aggregated = {"baseline": report.aggregate([_run(10.0, 4.0, 1.0)]),
                  "enl": report.aggregate([_run(12.5, 7.0, 3.0)])}
    table = report.comparison_table(aggregated, {"baseline": "baseline", "enl": "+3ENL TD"})
    lines = table.splitlines()
    assert lines[0] == "| metric | baseline | +3ENL TD | Δ +3ENL TD |"
    assert "| box AP | 10.0 | 12.5 | +2.5 |" in lines
    assert "| box APs | 4.0 | 7.0 | +3.0 |" in lines
    assert "| mask AP[ball] | 1.0 | 3.0 | +2.0 |" in lines
    assert "| box APl | n/a | n/a | n/a |" in lines
    seeds = {"baseline": report.aggregate([_run(10.0, 4.0, 1.0), _run(12.0, 4.0, 1.0)]),
             "enl": report.aggregate([_run(12.0, 7.0, 3.0), _run(12.0, 7.0, 3.0)])}
    # The difference is paired by seed: (12 - 10, 12 - 12) = +1.0 ± 1.4.
    assert "| box AP | 11.0 ± 1.4 | 12.0 ± 0.0 | +1.0 ± 1.4 |" in report.comparison_table(seeds)


def test_comparison_table_three_variants_each_against_the_baseline():
    aggregated = {"baseline": report.aggregate([_run(10.0, 4.0, 1.0)]),
                  "1nl_bu": report.aggregate([_run(11.0, 4.5, 1.0)]),
                  "3enl_td": report.aggregate([_run(12.5, 7.0, 3.0)])}
    table = report.comparison_table(aggregated, {"baseline": "baseline", "1nl_bu": "+1NL BU",
                                                 "3enl_td": "+3ENL TD"})
    lines = table.splitlines()
    assert lines[0] == ("| metric | baseline | +1NL BU | +3ENL TD | Δ +1NL BU | Δ +3ENL TD |")
    assert "| box AP | 10.0 | 11.0 | 12.5 | +1.0 | +2.5 |" in lines
    assert "| mask AP[ball] | 1.0 | 1.0 | 3.0 | +0.0 | +2.0 |" in lines


def test_write_summary_files(tmp_path):
    runs = {"baseline": [_run(10.0, 4.0, 1.0)], "enl": [_run(12.5, 7.0, 3.0)]}
    meta = {"title": "t", "command": "python -m enl_experiments.main", "machine": "m",
            "seeds": [0]}
    table = report.write_summary(tmp_path, runs, {"baseline": "baseline", "enl": "+3ENL TD"},
                                 meta, ["ap_bars.png"])
    summary = (tmp_path / "summary.md").read_text()
    assert table in summary and "python -m enl_experiments.main" in summary
    assert "[ap_bars.png](ap_bars.png)" in summary
    document = json.loads((tmp_path / "metrics.json").read_text())
    assert document["aggregate"]["enl"]["bbox"]["AP"]["mean"] == 12.5
    assert document["per_seed"]["baseline"][0]["bbox"]["APs"] == 4.0


def test_choose_figure_images_prefers_small_objects_and_the_category(data):
    ids, query = main.choose_figure_images(_val(data), 3, "swimmer")
    assert len(ids) == 3 and ids[0] == query[0]
    coco = COCO(str(_val(data)))
    anns = coco.loadAnns(coco.getAnnIds(imgIds=query[0], catIds=[3]))
    centres = [(a["bbox"][0] + a["bbox"][2] / 2, a["bbox"][1] + a["bbox"][3] / 2) for a in anns]
    assert query[1:] in centres


def test_figures_are_written(tmp_path, data, perfect):
    history = {"total_loss": {"step": [1, 2, 3], "value": [3.0, 2.0, 1.5]},
               "mask_loss": {"step": [1, 2, 3], "value": [1.0, 0.8, 0.7]}}
    assert figures.loss_curves({"baseline": [history], "+3ENL TD": [history]},
                               tmp_path / "loss.png").stat().st_size > 0
    aggregated = {"baseline": report.aggregate([_run(10.0, 4.0, 1.0)]),
                  "enl": report.aggregate([_run(12.5, 7.0, 3.0)])}
    figures.ap_bars(aggregated, {"baseline": "baseline", "enl": "+3ENL TD"}, tmp_path / "ap.png")
    coco = COCO(str(_val(data)))
    image_id = coco.getImgIds()[0]
    info = coco.loadImgs(image_id)[0]
    image_path = data / "val2017" / info["file_name"]
    ground_truth = {image_id: coco.loadAnns(coco.getAnnIds(imgIds=image_id))}
    figures.detections_grid([(image_id, image_path)], ground_truth, {"baseline": perfect},
                            {1: "person", 2: "ball", 3: "swimmer"}, tmp_path / "det.png")
    maps = {3: np.random.default_rng(0).normal(size=(16, 16)), 4: np.ones((8, 8))}
    figures.attention_figure(image_path, (30.0, 40.0), maps, tmp_path / "att.png")
    figures.dct_filters(tmp_path / "dct.png", grid=(16, 16), positions=((4, 4), (8, 12)),
                        dct_weights={"trained": np.full((9, 9), 0.5)})
    for name in ("loss", "ap", "det", "att", "dct"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


def test_main_fails_cleanly_on_a_bad_coco_dir(tmp_path, capsys):
    (tmp_path / "coco" / "train2017").mkdir(parents=True)
    code = main.main(["--coco-dir", str(tmp_path / "coco"), "--results-dir",
                      str(tmp_path / "results"), "--data-dir", str(tmp_path / "data"),
                      "--run-name", "broken"])
    assert code == 1
    assert "experiment FAILED" in capsys.readouterr().err
    assert not (tmp_path / "results" / "broken").exists()


def test_plateau_compares_the_last_fifth_with_the_fifth_before():
    steps = list(range(10, 110, 10))  # 10..100: last fifth 90, 100; before 70, 80
    history = {"total_loss": {"step": steps, "value": [9, 8, 7, 6, 5, 4, 2.0, 2.0, 1.0, 1.0]}}
    assert report.plateau(history) == {"last": 1.0, "before": 2.0, "relative_change": -0.5}
    flat = {"total_loss": {"step": steps, "value": [3.0] * 10}}
    assert report.plateau(flat)["relative_change"] == 0.0
    assert report.plateau({"total_loss": {"step": [1], "value": [1.0]}}) is None
    assert report.plateau({}) is None
    with pytest.raises(ValueError, match="tail"):
        report.plateau(flat, tail=0.8)
