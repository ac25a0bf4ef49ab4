"""Shared fixtures of the Model Garden suite: one tiny COCO-format data set.

Built once per session with the project's generator
(``enl_experiments.dataset``) and converted with ``enl_keras.garden.data``.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

IMAGE_SIZE = 128  # a multiple of 64 (Model Garden's padding to 2^max_level)
NUM_PROPOSALS = 64
MAX_INSTANCES = 20
BUILD_SEED = 0  # the seed every built experiment's weights are drawn with


@pytest.fixture(scope="session")
def coco_tfrecords(tmp_path_factory):
    """Two train and two val images (128 px, 4-8 objects, masks): JSON + TFRecords."""
    from enl_experiments.dataset import generate_dataset
    from enl_keras.garden.data import convert_coco_folder

    root = tmp_path_factory.mktemp("coco")
    paths = generate_dataset(root, num_train=2, num_val=2, image_size=IMAGE_SIZE, seed=5)
    shards = convert_coco_folder(root, num_shards=1)
    return {"root": root, "paths": paths, "shards": shards,
            "train_pattern": str(root / "tfrecords" / "train-*"),
            "val_pattern": str(root / "tfrecords" / "val-*"),
            "val_annotations": str(paths.val_annotations)}


def tiny_overrides(experiment: str, coco=None, image_size: int = IMAGE_SIZE) -> dict:
    """``params_override`` that shrinks a registered experiment for a CPU test.

    ResNet-18, 64 FPN filters, narrow heads, few proposals, float32, no XLA,
    no pretrained checkpoint; the architecture (levels, blocks, heads) is the
    experiment's own.

    The ROI sampler keeps every candidate (proposals + padded ground truth):
    its random subsampling is then a permutation, so a train step is a
    deterministic function of weights and batch, which the checkpoint and
    distribution tests compare exactly.
    """
    mask = "maskrcnn" in experiment
    backbone = "resnet_nl" if "nlbu" in experiment else "resnet"
    decoder = "enl_fpn" if ("_enl_" in experiment or "nltd" in experiment) else "fpn"
    model = {
        "num_classes": 4,
        "input_size": [image_size, image_size, 3],
        "backbone": {"type": backbone, backbone: {"model_id": 18}},
        "decoder": {"type": decoder, decoder: {"num_filters": 64}},
        "rpn_head": {"num_filters": 64},
        "detection_head": {"num_filters": 64, "num_convs": 1, "fc_dims": 128},
        "roi_generator": {"pre_nms_top_k": 256, "num_proposals": NUM_PROPOSALS,
                          "test_pre_nms_top_k": 256, "test_num_proposals": 32},
        "roi_sampler": {"num_sampled_rois": NUM_PROPOSALS + MAX_INSTANCES,
                        "foreground_fraction": 1.0},
        "detection_generator": {"pre_nms_top_k": 200, "max_num_detections": 20},
        "norm_activation": {"use_sync_bn": False},
    }
    if mask:
        model["mask_head"] = {"num_filters": 64, "num_convs": 1}
        model["mask_sampler"] = {"num_sampled_masks": 16}
    data = {"global_batch_size": 2, "dtype": "float32", "shuffle_buffer_size": 2,
            "parser": {"aug_rand_hflip": False, "aug_scale_min": 1.0, "aug_scale_max": 1.0,
                       "rpn_batch_size_per_im": 64, "max_num_instances": MAX_INSTANCES}}
    task = {"init_checkpoint": None, "model": model,
            "train_data": {**data, "is_training": True},
            "validation_data": {**data, "is_training": False, "drop_remainder": False}}
    if coco is not None:
        task["train_data"]["input_path"] = coco["train_pattern"]
        task["validation_data"]["input_path"] = coco["val_pattern"]
        task["annotation_file"] = coco["val_annotations"]
    return {"runtime": {"mixed_precision_dtype": "float32", "enable_xla": False},
            "task": task}


def tiny_experiment(experiment: str, coco=None, image_size: int = IMAGE_SIZE):
    """The registered experiment ``experiment`` with :func:`tiny_overrides`."""
    from official.core import exp_factory

    from enl_keras.garden import registry_imports  # noqa: F401

    config = exp_factory.get_exp_config(experiment)
    config.override(tiny_overrides(experiment, coco, image_size), is_strict=True)
    return config


@pytest.fixture(name="tiny_experiment", scope="session")
def tiny_experiment_fixture():
    """:func:`tiny_experiment` (tests take helpers as fixtures: the repository
    root has its own ``conftest`` module)."""
    return tiny_experiment


@pytest.fixture(name="tiny_overrides", scope="session")
def tiny_overrides_fixture():
    """:func:`tiny_overrides`."""
    return tiny_overrides


@pytest.fixture(scope="session")
def built_experiments(coco_tfrecords):
    """Registered experiments (and Model Garden's two baselines), tiny, built on demand.

    ``built_experiments(name)`` returns ``(config, task, model)``; each model is
    built once per session (a Mask R-CNN build is 10-20 s here) and shared.
    Each is built right after ``set_random_seed(BUILD_SEED)``, so its initial
    weights do not depend on which tests ran before (Model Garden does not
    seed its initialisers): a test that trains one starts from the same point
    in every run.
    """
    import tf_keras
    from official.core import task_factory

    cache = {}

    def get(name):
        if name not in cache:
            config = tiny_experiment(name, coco_tfrecords)
            task = task_factory.get_task(config.task)
            tf_keras.utils.set_random_seed(BUILD_SEED)
            cache[name] = (config, task, task.build_model())
        return cache[name]

    return get


# ---------------------------------------------------------------- background
# Two tests run Model Garden in a process of their own (the train entry, and
# MirroredStrategy, whose logical devices must be set before TensorFlow
# starts). Their modules define ``background_command(coco, tiny_overrides,
# workdir)``; the processes start with the session's first garden test and run
# beside the in-process tests, and those tests run last and wait for them.


class BackgroundJob:
    """A command running in its own process, its output kept in ``workdir``."""

    def __init__(self, command, workdir):
        import subprocess

        self.workdir = workdir
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
        self._stdout = open(workdir / "stdout.txt", "w")  # noqa: SIM115 (closed in wait)
        self._stderr = open(workdir / "stderr.txt", "w")  # noqa: SIM115
        self._process = subprocess.Popen(command, stdout=self._stdout, stderr=self._stderr,
                                         env=env)

    def wait(self, timeout: float = 900):
        """Waits for the process; returns ``(returncode, stderr tail)``."""
        try:
            returncode = self._process.wait(timeout=timeout)
        finally:
            self.stop()
        return returncode, (self.workdir / "stderr.txt").read_text()[-6000:]

    def stop(self):
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._stdout.close()
        self._stderr.close()


def _runs_in_background(item) -> bool:
    return hasattr(getattr(item, "module", None), "background_command")


def pytest_collection_modifyitems(session, config, items):
    # Stable sort: background tests last, everything else in its usual order.
    items.sort(key=_runs_in_background)


@pytest.fixture(scope="session", autouse=True)
def background_jobs(request, tmp_path_factory):
    """``{module name: BackgroundJob}`` for the selected background tests."""
    modules = {item.module for item in request.session.items if _runs_in_background(item)}
    jobs = {}
    if modules:
        coco = request.getfixturevalue("coco_tfrecords")
        for module in sorted(modules, key=lambda m: m.__name__):
            workdir = tmp_path_factory.mktemp(module.__name__.rsplit(".", 1)[-1])
            jobs[module.__name__] = BackgroundJob(
                module.background_command(coco, tiny_overrides, workdir), workdir)
    yield jobs
    for job in jobs.values():
        job.stop()
