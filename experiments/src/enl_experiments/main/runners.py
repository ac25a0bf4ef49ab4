"""Framework adapters of the main job: train a model, then predict on the validation set.

Each adapter runs its framework in child processes (TensorFlow and torchvision
never share a process) and leaves, in the run folder it is given, the files
the rest of the job reads:

- ``detections.json``: COCO results on the validation images (boxes, RLE masks),
- ``losses.json``: ``{tag: {"step": [...], "value": [...]}}``,
- ``train.log`` / ``predict.log``: the child processes' full output,
- for the ENL model, ``attention.npz`` (attention of the query pixels per
  block) and ``blocks/*.npz`` (trained block weights, ``enl_core`` layout).

A child that exits non-zero raises :class:`StepFailed` with the end of its log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import sys
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import yaml
from tqdm import tqdm

from enl_core.coco import CocoPaths
from enl_experiments.common import extras, proc
from enl_experiments.main import torch_job
from enl_experiments.main.profiles import Profile
from enl_experiments.main.variants import (
    GARDEN_CONFIG_SLOT,
    GARDEN_EXPERIMENTS,
    LABELS,
)
from enl_experiments.main.variants import VARIANTS as MODELS

__all__ = ["LABELS", "MODELS", "DataPaths", "StepFailed", "get_runner", "run_logged"]


class StepFailed(RuntimeError):
    """A step of the main job failed; the message says which and why."""


def config_root(config_dir: str | Path | None = None) -> Traversable:
    """Where the YAML configs of the profiles are read from.

    Args:
        config_dir: a folder laid out as the packaged one (``beach_*.yaml``,
            ``garden/*.yaml``); None: the YAML files shipped inside the package
            (``enl_experiments/configs/``, read with :mod:`importlib.resources`).

    Raises:
        ValueError: naming `config_dir` when it is not a folder.
    """
    if config_dir is None:
        return resources.files("enl_experiments") / "configs"
    path = Path(config_dir)
    if not path.is_dir():
        raise ValueError(f"`config_dir` must be a folder of YAML configs, received {config_dir!r}")
    return path


def run_logged(command: list[str], log_path: Path, description: str, total: int | None = None,
               step_pattern: str | None = None, env: dict | None = None) -> None:
    """Runs ``command``, teeing its output to ``log_path`` and a tqdm bar.

    Args:
        command: argv of the child.
        log_path: where stdout and stderr go (merged).
        description: the bar's label and the failure message's subject.
        total: steps for the bar; None shows a spinner-like counter of lines.
        step_pattern: regex with one group, the current step, searched in each line.
        env: environment of the child (default: :func:`~enl_experiments.common.proc.child_env`).

    Raises:
        StepFailed: the child exited non-zero (message: exit code, log path,
            last 25 lines).
    """
    pattern = re.compile(step_pattern) if step_pattern else None
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log, tqdm(total=total, desc=description, unit="step",
                                          leave=True, dynamic_ncols=True) as bar:

        def advance(line: str) -> None:
            if pattern and total:
                match = pattern.search(line)
                if match:
                    bar.update(max(0, min(total, int(match.group(1))) - bar.n))

        result = proc.run_child(command, log, env=env, on_line=advance)
        if result.returncode == 0 and total:
            bar.update(total - bar.n)
    if result.returncode != 0:
        raise StepFailed(f"{description} failed (exit code {result.returncode}); full log: "
                         f"{log_path}\n" + "\n".join(f"    {line}" for line in result.tail))


@dataclasses.dataclass(frozen=True)
class DataPaths(CocoPaths):
    """The COCO-layout data a run uses (the splits as enl_core.coco finds them)."""

    num_classes: int  # largest category id + 1 (Model Garden counts the background)
    tfrecords: Path  # where the garden adapter writes the TFRecords (never inside COCO_DIR)
    image_size: tuple[int, int] | None = None  # (height, width) of every image; None: mixed
    twin_images: Path | None = None  # the counterfactual twins of the validation images
    twin_annotations: Path | None = None

    @property
    def splits(self) -> tuple[str, ...]:
        """The COCO split names a run reads (train, val and, when present, the twins)."""
        return ("train2017", "val2017", *(("twin2017",) if self.twin_annotations else ()))


class GardenRunner:
    """Model Garden (tf_keras) through ``enl_keras.garden.train``."""

    name = "garden"
    # Top-level names only: find_spec of a submodule would import its parent.
    modules = ("tensorflow", "tf_keras", "official", "enl_keras")

    def __init__(self, profile: Profile, config_dir: str | Path | None = None):
        self.profile = profile
        self.configs = config_root(config_dir)
        extras.require_modules("the garden framework", self.modules, "garden")

    def prepare(self, data: DataPaths, work: Path) -> None:
        """TFRecords of both splits with Model Garden's create_coco_tf_record (cached)."""
        stamp = data.tfrecords / ".complete"
        if stamp.exists():
            return
        shards = 32 if self.profile.own_schedule else 1
        run_logged([sys.executable, "-m", "enl_experiments.main.garden_job", "convert",
                    "--data", str(data.root), "--out", str(data.tfrecords),
                    "--num-shards", str(shards), "--splits", *data.splits], work / "convert.log",
                   "TFRecords (create_coco_tf_record)", env=proc.child_env())
        stamp.write_text("ok\n")

    def _run_config(self, data: DataPaths, seed: int, out: Path) -> Path:
        profile = self.profile
        tfrecords = data.tfrecords
        config = {"task": {
            "annotation_file": str(data.val_annotations),
            "model": {"num_classes": data.num_classes},
            # deterministic: tf.data keeps the element order of its parallel maps.
            "train_data": {"input_path": str(tfrecords / "train2017-*"), "seed": seed,
                           "deterministic": True},
            "validation_data": {"input_path": str(tfrecords / "val2017-*")},
        }}
        num_val = len(json.loads(data.val_annotations.read_text())["images"])
        if not profile.own_schedule:
            steps = profile.train_steps
            height, width = data.image_size or (profile.image_size, profile.image_size)
            config["task"]["model"]["input_size"] = [height, width, 3]
            config["task"]["train_data"]["global_batch_size"] = profile.batch_size
            config["task"]["validation_data"]["global_batch_size"] = profile.eval_batch_size
            config["trainer"] = {
                "train_steps": steps,
                "steps_per_loop": min(profile.summary_interval, steps),
                "summary_interval": min(profile.summary_interval, steps),
                "checkpoint_interval": steps,
                "validation_interval": steps,
                "validation_steps": -(-num_val // profile.eval_batch_size),
                "optimizer_config": {
                    "learning_rate": {"type": "cosine", "cosine": {
                        "initial_learning_rate": profile.learning_rate,
                        "decay_steps": steps}},
                    "warmup": {"type": "linear", "linear": {
                        "warmup_steps": min(profile.warmup_steps, steps),
                        "warmup_learning_rate": profile.learning_rate / 10}}},
            }
        path = out / "run_config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def config_files(self, model: str) -> list[Traversable]:
        """The profile's YAML files for ``model``, common one first
        (:func:`garden_config_files`)."""
        return garden_config_files(self.configs, self.profile, model)

    def train_and_predict(self, model: str, data: DataPaths, seed: int, out: Path,
                          queries: list[tuple[int, float, float]]) -> None:
        """Trains ``model`` then predicts on the validation set, in one child process."""
        config_files = self.config_files(model)
        with contextlib.ExitStack() as stack:
            # Model Garden reads files by path: as_file gives one for any package layout.
            paths = [stack.enter_context(resources.as_file(path)) for path in config_files]
            self._train_and_predict(model, paths, data, seed, out, queries)

    def _train_and_predict(self, model: str, config_files: list[Path], data: DataPaths,
                           seed: int, out: Path, queries: list[tuple[int, float, float]]) -> None:
        run_config = self._run_config(data, seed, out)
        flags = [f"--experiment={GARDEN_EXPERIMENTS[model]}",
                 f"--mode={self.profile.garden_mode}",
                 f"--model_dir={out / 'model'}"]
        flags += [f"--config_file={path}" for path in (*config_files, run_config)]
        total = None if self.profile.own_schedule else self.profile.train_steps
        command = [sys.executable, "-m", "enl_experiments.main.garden_job", "train", "--seed",
                   str(seed), "--predict-out", str(out)]
        for image_id, x, y in queries:
            command += ["--query", f"{image_id}:{x}:{y}"]
        if data.twin_annotations:
            command += ["--twin-pattern", str(data.tfrecords / "twin2017-*"),
                        "--twin-out", str(out / "twin")]
        run_logged([*command, "--", *flags], out / "train.log",
                   f"{LABELS[model]} (seed {seed})", total, r"train \| step:\s+(\d+)",
                   env=proc.child_env())


def garden_config_files(configs: Traversable, profile: Profile, model: str) -> list[Traversable]:
    """The garden YAML files that describe ``model`` under ``profile``, common one
    first: what Model Garden trains, and what the torch mirror's flags are derived from.

    Raises:
        StepFailed: a file is missing (names it and the profile).
    """
    names = profile.garden_configs
    files = [configs / name for name in (names[0], names[GARDEN_CONFIG_SLOT[model]]) if name]
    for path in files:
        if not path.is_file():
            raise StepFailed(f"config file {path} not found (profile {profile.name!r})")
    return files


def garden_model(files: list[Traversable]) -> dict:
    """``task.model`` of ``files`` read as one config, each later file merged
    into the earlier ones key by key at every depth, as Model Garden's
    ``--config_file`` list overrides its params (a variant file that sets only
    ``anchor.anchor_size`` keeps the common file's ``aspect_ratios``). The one
    reader of the garden YAML for the torch mirror."""
    found: dict = {}
    for path in files:
        model = (yaml.safe_load(path.read_text()) or {}).get("task", {}).get("model", {})
        found = _merged(found, model)
    return found


def _merged(base: dict, override: dict) -> dict:
    """``base`` with ``override`` on top; nested dicts merge, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = _merged(merged[key], value)
        merged[key] = value
    return merged


class TorchRunner:
    """The torchvision mirror through ``enl_torch.train`` (reads the COCO JSON directly)."""

    name = "torch"
    modules = ("torch", "torchvision", "enl_torch")

    def __init__(self, profile: Profile, config_dir: str | Path | None = None):
        self.profile = profile
        self.configs = config_root(config_dir)
        extras.require_modules("the torch framework", self.modules, "torch")

    def config_files(self, model: str) -> list[Traversable]:
        """The garden YAML files the torch model is derived from: its decoder
        (FPN width, block-input norm) and, unless the profile keeps
        torchvision's sizes, its anchors, proposals and heads
        (:func:`garden_config_files`)."""
        return garden_config_files(self.configs, self.profile, model)

    def prepare(self, data: DataPaths, work: Path) -> None:
        """Nothing to convert: the torch mirror reads images and JSON."""

    def _args(self, model: str, data: DataPaths, seed: int, out: Path) -> list[str]:
        """``enl_torch.train`` arguments describing the model; the same list goes
        to ``torch_job predict``, which rebuilds the model from them."""
        profile = self.profile
        if profile.torch_sizes:
            min_size, max_size = profile.torch_sizes
        else:
            height, width = data.image_size or (profile.image_size, profile.image_size)
            min_size, max_size = min(height, width), max(height, width)
        args = ["--data-dir", str(data.root), "--output-dir", str(out / "model"),
                "--model", "maskrcnn_enl_resnet_fpn", "--backbone", profile.torch_backbone,
                "--variant", model, "--min-size", str(min_size),
                "--max-size", str(max_size), "--seed", str(seed)]
        # FPN width and block-input norm: the variant's garden decoder.
        garden = garden_model(self.config_files(model))
        args += torch_job.decoder_flags(torch_job.decoder_kwargs(garden))
        detector = self.detector_kwargs(model)
        if detector is not None:
            # Anchors, proposals and heads derived from the garden YAML.
            args += torch_job.detector_flags(detector)
        return args

    def detector_kwargs(self, model: str) -> dict | None:
        """The torch builders' detector sizes (anchors, proposals, heads) that
        ``model``'s garden YAML describes (:func:`torch_job.detector_kwargs`);
        None where the profile keeps torchvision's (``paper``)."""
        if not self.profile.torch_detector_from_garden:
            return None
        return torch_job.detector_kwargs(garden_model(self.config_files(model)))

    def train_and_predict(self, model: str, data: DataPaths, seed: int, out: Path,
                          queries: list[tuple[int, float, float]]) -> None:
        """Trains ``model`` with ``enl_torch.train``, then predicts (two child processes)."""
        profile = self.profile
        steps = profile.train_steps
        # torch_job train: enl_torch.train with torch's deterministic algorithms on.
        command = [sys.executable, "-m", "enl_experiments.main.torch_job", "train", "--",
                   *self._args(model, data, seed, out),
                   "--batch-size", str(profile.batch_size), "--steps", str(steps),
                   "--lr", str(profile.torch_learning_rate),
                   "--warmup-steps", str(min(profile.warmup_steps, steps)),
                   "--log-every", str(min(profile.summary_interval, steps)),
                   "--checkpoint-every", str(steps), "--no-eval", "--clip-grad-norm", "10"]
        run_logged(command, out / "train.log", f"{LABELS[model]} (seed {seed})", steps,
                   r'"step":\s*(\d+)', env=proc.child_env())
        command = [sys.executable, "-m", "enl_experiments.main.torch_job", "predict",
                   "--out", str(out)]
        for image_id, x, y in queries:
            command += ["--query", f"{image_id}:{x}:{y}"]
        command += ["--", *self._args(model, data, seed, out)]
        run_logged(command, out / "predict.log", f"predict {LABELS[model]}", env=proc.child_env())
        if data.twin_annotations:
            command = [sys.executable, "-m", "enl_experiments.main.torch_job", "predict", "--out",
                       str(out / "twin"), "--", *self._args(model, data, seed, out),
                       "--val-split", "twin2017"]
            run_logged(command, out / "predict_twin.log", f"predict {LABELS[model]} (twins)",
                       env=proc.child_env())


RUNNERS = {"garden": GardenRunner, "torch": TorchRunner}


def get_runner(framework: str, profile: Profile, config_dir: str | Path | None = None):
    """The adapter for ``framework`` ("garden" or "torch").

    Args:
        framework: "garden" or "torch".
        profile: the budget.
        config_dir: see :func:`config_root` (None: the packaged YAML files).

    Raises:
        ValueError: naming `framework` and the value received.
        MissingExtra: the framework's extra is not installed (names the ``pip install`` line).
    """
    if framework not in RUNNERS:
        raise ValueError(f"`framework` must be one of {sorted(RUNNERS)}, received {framework!r}")
    return RUNNERS[framework](profile, config_dir)
