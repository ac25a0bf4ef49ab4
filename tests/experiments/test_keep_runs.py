"""docs/runs/keep.py: what the evidence folders keep of a run (boxes, no masks)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

KEEP = Path(__file__).resolve().parents[2] / "docs" / "runs" / "keep.py"


@pytest.fixture(scope="module")
def keep():
    spec = importlib.util.spec_from_file_location("keep_runs", KEEP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _detections(n):
    return [{"image_id": i, "category_id": 2, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5,
             "segmentation": {"size": [64, 512], "counts": "abc"}} for i in range(n)]


def test_keeps_metrics_and_boxes_without_masks(keep, tmp_path):
    src, dst = tmp_path / "run", tmp_path / "kept"
    (src / "runs" / "baseline-seed0" / "twin").mkdir(parents=True)
    (src / "runs" / "baseline-seed0" / "model").mkdir()
    (src / "runs" / "baseline-seed0" / "model" / "ckpt-1.index").write_text("weights")
    (src / "metrics.json").write_text('{"meta": {}}')
    (src / "summary.md").write_text("# run\n")
    (src / "loss_curves.png").write_bytes(b"png")
    (src / "runs" / "baseline-seed0" / "detections.json").write_text(json.dumps(_detections(3)))
    (src / "runs" / "baseline-seed0" / "twin" / "detections.json").write_text(
        json.dumps(_detections(2)))
    written = keep.keep(src, dst)
    assert sorted(p.relative_to(dst).as_posix() for p in written) == [
        "metrics.json", "runs/baseline-seed0/detections.json",
        "runs/baseline-seed0/twin/detections.json", "summary.md"]
    boxes = json.loads((dst / "runs" / "baseline-seed0" / "detections.json").read_text())
    assert len(boxes) == 3 and all("segmentation" not in d for d in boxes)
    assert boxes[0] == {"image_id": 0, "category_id": 2, "bbox": [1.0, 2.0, 3.0, 4.0],
                        "score": 0.5}
    assert (dst / "summary.md").read_text() == "# run\n"
    assert not (dst / "loss_curves.png").exists() and not (dst / "runs" / "baseline-seed0"
                                                            / "model").exists()


def test_keeps_a_probe_folder(keep, tmp_path):
    src = tmp_path / "probe"
    (src / "3enl_td-seed1").mkdir(parents=True)
    (src / "3enl_td-seed1" / "detections.json").write_text(json.dumps(_detections(1)))
    (src / "results.json").write_text("{}")
    keep.keep(src, tmp_path / "kept")
    assert json.loads((tmp_path / "kept" / "3enl_td-seed1" / "detections.json").read_text())[0][
        "score"] == 0.5
    assert (tmp_path / "kept" / "results.json").read_text() == "{}"


def test_bad_folders_are_named(keep, tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        keep.main([str(tmp_path / "missing"), str(tmp_path / "kept")])
    assert raised.value.code == 2 and "`src` must be a run folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="`src` holds no metrics"):
        keep.keep(tmp_path / "empty", tmp_path / "kept")
    bad = tmp_path / "bad" / "runs" / "baseline-seed0"
    bad.mkdir(parents=True)
    (bad / "detections.json").write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match="`source` must hold a COCO detections list"):
        keep.keep(tmp_path / "bad", tmp_path / "kept")
