"""The effective reach of a detector's features, from gradients (torch mirror).

The gradient of one feature at the centre of a level with respect to the
input pixels says which pixels it actually depends on (the effective
receptive field, Luo et al., NeurIPS 2016). This module measures, for the
torch mirror of the main job's detector, how that gradient's mass spreads
with the horizontal distance from the feature's centre: the distance within
which 50%, 90% and 99% of it lie, and the farthest pixel with any gradient
(which must stay within the theoretical reach of :mod:`enl_experiments.main.reach`).

Run in its own process (torch only): ``python -m enl_experiments.main.erf_torch
--images DIR [--checkpoint-dir DIR] -- <enl_torch.train arguments>``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from enl_experiments.main.erf import level_reach


def measure(train_argv: list[str], image_dir: str, checkpoint_dir: str | None,
            levels=("0", "1", "2", "3"), count: int = 4) -> dict:
    """The reach of each FPN level's centre feature, averaged over ``count`` images."""
    import torch
    from PIL import Image

    from enl_torch import train as torch_train
    from enl_torch.training import checkpoint as ckpt

    args = torch_train.build_parser().parse_args(train_argv)
    model = torch_train.build_model(args, num_classes=4)
    if checkpoint_dir:
        path = ckpt.latest_checkpoint(checkpoint_dir)
        if path is None:
            raise FileNotFoundError(f"no checkpoint under `checkpoint_dir` {checkpoint_dir!r}")
        model.load_state_dict(ckpt.load_checkpoint(path)["model"])
    model.eval()
    files = sorted(Path(image_dir).glob("*.png"))[:count]
    if not files:
        raise FileNotFoundError(f"no PNG images in `images` {image_dir!r}")
    totals: dict[str, np.ndarray] = {}
    for file in files:
        image = torch.from_numpy(np.asarray(Image.open(file).convert("RGB"), np.float32) / 255)
        pixels = image.permute(2, 0, 1)[None].requires_grad_(True)  # 1, 3, H, W
        normalised = (pixels - model.transform.image_mean[0]) / model.transform.image_std[0]
        features = model.backbone(normalised)
        for level in levels:
            if pixels.grad is not None:
                pixels.grad = None
            feature = features[level]  # 1, C, h, w
            centre = feature[0, :, feature.shape[-2] // 2, feature.shape[-1] // 2]
            (grad,) = torch.autograd.grad(centre.sum(), pixels, retain_graph=True)
            magnitude = grad[0].abs().sum(0).double().numpy()  # H, W
            totals[level] = totals.get(level, 0) + magnitude
    widths = {f"P{int(level) + 2}": features[level].shape[-1] for level in totals}
    return level_reach({f"P{int(level) + 2}": total for level, total in totals.items()},
                       widths, pixels.shape[-1])


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="python -m enl_experiments.main.erf_torch")
    parser.add_argument("--images", required=True, help="a folder of PNG images")
    parser.add_argument("--checkpoint-dir", default=None, help="trained weights (else init)")
    parser.add_argument("--count", type=int, default=4)
    args = parser.parse_args(argv[:split])
    print(json.dumps(measure(argv[split + 1:], args.images, args.checkpoint_dir,
                             count=args.count), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
