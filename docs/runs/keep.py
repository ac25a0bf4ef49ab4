"""Copies what docs/runs keeps of a finished main-job run: boxes, not masks or checkpoints.

From ``SRC`` (a ``results/<run>`` folder, or a ``probe.py --out`` folder) to ``DST``:
``metrics.json``, ``summary.md`` and ``results.json`` where present, and every
``runs/<model>-seed<k>/detections.json`` and ``runs/<model>-seed<k>/twin/detections.json``
(a probe folder's ``<model>-seed<k>/detections.json``) with each detection's
``segmentation`` (the mask's RLE) removed. What is left is what ``worth`` and
``probe.py`` re-score (box scores against the generator's objects) at a few
hundred kB a run instead of tens of MB.

Usage::

    .venv/bin/python docs/runs/keep.py results/RUN docs/runs/RUN
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

KEPT_AS_IS = ("metrics.json", "summary.md", "results.json")


def boxes_only(source: Path, target: Path) -> int:
    """Writes ``source``'s detections without their masks to ``target``; returns how many."""
    detections = json.loads(source.read_text())
    if not isinstance(detections, list):
        raise ValueError(f"`source` must hold a COCO detections list, received "
                         f"{type(detections).__name__} in {source}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps([{k: v for k, v in d.items() if k != "segmentation"}
                                  for d in detections]))
    return len(detections)


def keep(src: Path, dst: Path) -> list[Path]:
    """Copies the kept files of run folder ``src`` into ``dst``; returns what it wrote."""
    if not src.is_dir():
        raise FileNotFoundError(f"`src` must be a run folder, received {src}")
    found = [src / name for name in KEPT_AS_IS if (src / name).is_file()]
    detections = (sorted(src.glob("runs/*/detections.json"))
                  + sorted(src.glob("runs/*/twin/detections.json"))
                  + sorted(p for p in src.glob("*/detections.json") if p.parent.name != "runs"))
    if not found and not detections:
        raise FileNotFoundError(f"`src` holds no metrics, summary or detections: {src}")
    dst.mkdir(parents=True, exist_ok=True)
    written = []
    for path in found:
        shutil.copy(path, dst / path.name)
        written.append(dst / path.name)
    for path in detections:
        out = dst / path.relative_to(src)
        boxes_only(path, out)
        written.append(out)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="results/<run> or a probe.py --out folder")
    parser.add_argument("dst", type=Path, help="where to keep it (docs/runs/<name>)")
    args = parser.parse_args(argv)
    try:
        written = keep(args.src, args.dst)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    print(f"kept {len(written)} files in {args.dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
