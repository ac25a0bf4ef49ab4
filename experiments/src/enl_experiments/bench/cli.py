"""``python -m enl_experiments.bench``: run the sections, write the report.

Sections run one after another, each framework (and each detector variant) in
its own worker process, never two at once: the machine has 2 cores, and
torchvision must not be imported after TensorFlow. Results go to
``results/bench/`` (``results.json``, ``report.md``, ``*.png``, ``bench.log``);
the summary of the targets is printed at the end.

Running a subset (``--sections keras``) merges into an existing
``results.json``; each section records when it ran and how busy the machine
was meanwhile, so a merged report says so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile

from enl_experiments.bench import detectors as detectors_lib
from enl_experiments.bench import measure, plots, report, targets, training
from enl_experiments.bench.config import (
    DETECTORS,
    SECTIONS,
    BenchConfig,
    from_environment,
    parse_image_size,
    quick_config,
)
from enl_experiments.common import extras, machine, proc

SECTION_TIMEOUT_S = {"torch": 3600, "keras": 3600, "detector": 1800, "training": 1800,
                     "training_garden": 1800}
# What each section's worker imports (top-level names), all from the `bench` extra.
SECTION_MODULES = {"torch": ("torch", "enl_torch"), "keras": ("keras", "tensorflow", "enl_keras"),
                   "detectors": ("tensorflow", "tf_keras", "official", "enl_keras"),
                   "training": ("torch", "torchvision", "enl_torch"),
                   "training_garden": ("tensorflow", "tf_keras", "official", "enl_keras")}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m enl_experiments.bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small mode (also BENCH_QUICK=1): N <= 16384, 256x384 detectors")
    parser.add_argument("--out", default=os.path.join("results", "bench"))
    parser.add_argument("--sections", type=_csv, help=f"subset of {','.join(SECTIONS)}; "
                        "merges into an existing results.json")
    parser.add_argument("--detectors", type=_csv, help=f"subset of {','.join(DETECTORS)}")
    parser.add_argument("--image-size", help="detector input HxW, default 800x1088")
    parser.add_argument("--sides", type=_csv, help="grid sides of the scaling section")
    parser.add_argument("--implementations", type=_csv,
                        help="scaling-section implementations to run (default: all)")
    parser.add_argument("--max-call-s", type=float, help="skip entries predicted slower")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--torch-compile", action="store_true",
                        help="also time ENL under torch.compile")
    parser.add_argument("--default-heap", action="store_true",
                        help="CPU: time with the allocators' defaults (fresh pages for every "
                             "large tensor) instead of reusing freed memory")
    parser.add_argument("--no-keras-xla", action="store_true",
                        help="do not time ENL under XLA in Keras")
    parser.add_argument("--report-only", action="store_true",
                        help="re-render report.md / plots from results.json")
    parser.add_argument("--readme", action="store_true",
                        help="print the condensed report for the root README and exit")
    return parser


def config_from_args(args) -> BenchConfig:
    overrides = {}
    if args.sections:
        overrides["sections"] = args.sections
    if args.detectors:
        overrides["detectors"] = args.detectors
    if args.image_size:
        overrides["image_size"] = parse_image_size(args.image_size)
    if args.sides:
        try:
            overrides["sides"] = tuple(int(s) for s in args.sides)
        except ValueError:
            raise ValueError(f"`--sides` must be integers, received {args.sides!r}") from None
    if args.implementations:
        overrides["implementations"] = args.implementations
    if args.max_call_s is not None:
        overrides["max_call_s"] = args.max_call_s
    if args.device:
        overrides["device"] = args.device
    if args.torch_compile:
        overrides["torch_compile"] = True
    if args.no_keras_xla:
        overrides["keras_xla"] = False
    if args.default_heap:
        overrides["reuse_heap"] = False
    return quick_config(**overrides) if args.quick else from_environment(**overrides)


class Runner:
    """Starts workers one at a time, streams their progress, logs everything."""

    def __init__(self, out_dir: str, config: BenchConfig):
        self.out_dir = out_dir
        self.log_path = os.path.join(out_dir, "bench.log")
        self.config_path = os.path.join(out_dir, "config.json")
        with open(self.config_path, "w") as handle:
            json.dump(config.to_json(), handle, indent=1)

    def log(self, message: str) -> None:
        print(message, flush=True)
        with open(self.log_path, "a") as handle:
            handle.write(message + "\n")

    def worker(self, arguments: list[str], env: dict, timeout_s: float) -> dict:
        """Runs one worker; returns its JSON or ``{"error": ...}``."""
        with tempfile.NamedTemporaryFile(suffix=".json", dir=self.out_dir,
                                         delete=False) as handle:
            out_path = handle.name
        command = [sys.executable, "-m", "enl_experiments.bench.worker", *arguments,
                   "--config", self.config_path, "--out", out_path]

        def echo(line: str) -> None:
            if line.startswith("["):
                print(line.rstrip(), flush=True)

        try:
            with open(self.log_path, "a") as log:
                result = proc.run_child(command, log, env=proc.child_env(**env), on_line=echo,
                                        tail_lines=15, timeout_s=timeout_s)
            if result.timed_out:
                return {"error": f"worker killed after {timeout_s:.0f} s: "
                                 + " | ".join(result.tail[-3:])}
            if result.returncode != 0:
                return {"error": f"worker exited with {result.returncode}: "
                                 + " | ".join(result.tail[-5:])}
            with open(out_path) as handle:
                return json.load(handle)
        except (OSError, ValueError) as error:
            return {"error": f"{type(error).__name__}: {error}"}
        finally:
            if os.path.exists(out_path):
                os.remove(out_path)

    def scaling(self, framework: str, config: BenchConfig) -> dict:
        env = {"KERAS_BACKEND": "tensorflow"} if framework == "keras" else {}
        if framework == "keras":  # read when TensorFlow loads
            env[measure.TF_CPU_BFC] = "true" if config.reuse_heap else "false"
        started = _now()
        with measure.Contention() as contention:
            result = self.worker(["scaling", "--framework", framework], env,
                                 SECTION_TIMEOUT_S[framework])
        result["run"] = contention.result | {"started": started}
        return result

    def detectors(self, config: BenchConfig) -> dict:
        variants = []
        started = _now()
        with measure.Contention() as contention:
            for detector in config.detectors:
                for variant in detectors_lib.VARIANTS:
                    result = self.worker(["detector", "--detector", detector, "--variant",
                                          variant], {}, SECTION_TIMEOUT_S["detector"])
                    if "error" in result:
                        self.log(f"[detectors] {detector} {variant}: {result['error']}")
                        result = {"detector": detector, "variant": variant, "status": "error",
                                  "reason": result["error"],
                                  "input_size": list(config.padded_image_size)}
                    variants.append(result)
        return {"variants": variants, "run": contention.result | {"started": started},
                "requested_size": "x".join(str(s) for s in config.image_size)}


    def training(self, config: BenchConfig, framework: str = "torch") -> dict:
        """The training table of ``framework`` ("torch" or "keras", Model Garden):
        one fresh worker per variant."""
        rows = []
        started = _now()
        section = "training" if framework == "torch" else "training_garden"
        with measure.Contention() as contention:
            for variant in training.VARIANTS:
                result = self.worker(["training", "--variant", variant, "--framework",
                                      framework], {}, SECTION_TIMEOUT_S[section])
                if "error" in result:
                    self.log(f"[{section}] {variant}: {result['error']}")
                    result = {"variant": variant, "status": "error", "reason": result["error"],
                              "input_size": list(config.image_size)}
                rows.append(result)
        return {"variants": rows, "run": contention.result | {"started": started}}


def write_outputs(results: dict, out_dir: str) -> None:
    results["meta"]["plots"] = plots.scaling_plots(results, out_dir)
    with open(os.path.join(out_dir, "results.json"), "w") as handle:
        json.dump(results, handle, indent=1)
    with open(os.path.join(out_dir, "report.md"), "w") as handle:
        handle.write(report.render(results))


def record_section(results: dict, name: str, section: dict) -> dict:
    """Stores ``section`` as ``results["sections"][name]``, stamped with this run's
    machine and command (``section["run"]``), and returns it.

    ``--sections`` merges into an earlier ``results.json``, whose other sections
    may come from another run on another machine: ``meta`` names only the last
    run, so each section carries its own (:func:`report.one_machine`).
    """
    section.setdefault("run", {}).update(machine=results["meta"]["machine"],
                                         command=results["meta"]["command"])
    results["sections"][name] = section
    return section


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    results_path = os.path.join(args.out, "results.json")
    if (args.readme or args.report_only) and not os.path.isfile(results_path):
        flag = "--readme" if args.readme else "--report-only"
        print(f"bench FAILED: {flag} reads an earlier run, but `--out` {args.out!r} holds no "
              "results.json", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    if args.readme:
        with open(results_path) as handle:
            print(report.readme(json.load(handle)))
        return 0
    if args.report_only:
        with open(results_path) as handle:
            results = json.load(handle)
        write_outputs(results, args.out)
        print(report.summary(results))
        return 0
    config = config_from_args(args)
    try:
        for section in config.sections:
            extras.require_modules(f"the bench's {section} section", SECTION_MODULES[section],
                                   "bench")
    except extras.MissingExtra as error:
        print(f"bench FAILED: {error}", file=sys.stderr)
        return 1
    results = {"sections": {}}
    if args.sections and os.path.exists(results_path):
        with open(results_path) as handle:
            results = json.load(handle)  # merge: keep the sections not re-run
    runner = Runner(args.out, config)
    results["meta"] = {"command": "python -m enl_experiments.bench " + " ".join(
        argv if argv is not None else sys.argv[1:]), "started": _now(),
        "machine": machine.machine_info(), "config": config.to_json()}
    if config.quick and not args.quick:
        results["meta"]["command"] = "BENCH_QUICK=1 " + results["meta"]["command"]
    runner.log(f"[bench] {results['meta']['started']} config {config.to_json()}")
    failed = False
    for section in config.sections:
        runner.log(f"[bench] section {section}")
        if section == "detectors":
            variants = record_section(results, section, runner.detectors(config))["variants"]
            failed |= any(v.get("status") == "error" for v in variants)
            below = targets.detectors_below_bound(variants)
            for line in below:
                runner.log(f"[detectors] eval memory below its lower bound: {line}")
            failed |= bool(below)
        elif section in ("training", "training_garden"):
            rows = record_section(results, section, runner.training(
                config, "torch" if section == "training" else "keras"))
            failed |= any(v.get("status") == "error" for v in rows["variants"])
            below = training.below_bound(rows["variants"])
            for variant in below:
                runner.log(f"[{section}] step memory below its lower bound: {variant}")
            failed |= bool(below)
        else:
            scaled = record_section(results, section, runner.scaling(section, config))
            failed |= "error" in scaled
            below = targets.below_lower_bound(scaled)
            for line in below:
                runner.log(f"[{section}] peak memory below its lower bound: {line}")
            failed |= bool(below)
        results["meta"]["finished"] = _now()
        write_outputs(results, args.out)  # a partial report survives a later failure
    summary = report.summary(results)
    runner.log(summary)
    runner.log(f"[bench] report: {os.path.join(args.out, 'report.md')}")
    return 1 if failed else 0
