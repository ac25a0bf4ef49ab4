"""One bench section in this process: ``python -m enl_experiments.bench.worker``.

The orchestrator (:mod:`enl_experiments.bench.cli`) starts one worker per
framework and one per detector variant, one after another, so that a
framework's import, threads and memory never overlap another's (and torchvision
is never imported after TensorFlow). The worker writes its JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys

from enl_experiments.bench.config import BenchConfig


def _log(message: str) -> None:
    print(message, flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m enl_experiments.bench.worker")
    parser.add_argument("section", choices=("scaling", "detector", "training"))
    parser.add_argument("--config", required=True, help="BenchConfig as a JSON file")
    parser.add_argument("--out", required=True, help="where the section's JSON goes")
    parser.add_argument("--framework", choices=("torch", "keras"))
    parser.add_argument("--detector")
    parser.add_argument("--variant")
    args = parser.parse_args(argv)
    with open(args.config) as handle:
        config = BenchConfig.from_json(json.load(handle))

    if args.section == "scaling":
        from enl_experiments.bench import scaling

        if args.framework == "torch":
            from enl_experiments.bench.torch_backend import TorchBackend as Backend
        elif args.framework == "keras":
            from enl_experiments.bench.keras_backend import KerasBackend as Backend
        else:
            parser.error("scaling needs --framework torch|keras")
        result = scaling.run_section(Backend(config), config, _log)
    elif args.section == "training":
        if not args.variant:
            parser.error("training needs --variant")
        from enl_experiments.bench import training

        measure = (training.measure_garden_variant if args.framework == "keras"
                   else training.measure_variant)
        result = measure(args.variant, config, _log)
    else:
        if not args.detector or not args.variant:
            parser.error("detector needs --detector and --variant")
        from enl_experiments.bench import detectors

        result = detectors.measure_variant(args.detector, args.variant, config, _log)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
