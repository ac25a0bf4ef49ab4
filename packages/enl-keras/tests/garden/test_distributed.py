"""A train step under MirroredStrategy (2 logical CPUs) equals the single-device step.

The strategy runs in its own process (``mirrored_step.py``): logical devices
are fixed before TensorFlow starts. Model Garden's synchronized batch norm is
on, as in its GPU / TPU configs.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from enl_core.testing import assert_close

pytestmark = pytest.mark.garden

EXPERIMENT = "maskrcnn_resnetfpn_enl_coco"
SCRIPT = os.path.join(os.path.dirname(__file__), "mirrored_step.py")


def background_command(coco, tiny_overrides, workdir):
    """The command, started with the session (see conftest, "background")."""
    overrides = tiny_overrides(EXPERIMENT, coco)
    overrides["task"]["model"]["norm_activation"]["use_sync_bn"] = True
    return [sys.executable, SCRIPT, EXPERIMENT, json.dumps(overrides), str(workdir)]


def test_mirrored_step_equals_single_device_step(background_jobs):
    job = background_jobs[__name__]
    returncode, stderr = job.wait()
    assert returncode == 0, stderr
    tmp_path = job.workdir

    report = json.loads((tmp_path / "report.json").read_text())
    assert report["num_replicas"] == 2 and report["use_sync_bn"]
    assert report["iterations"] == [1, 1]
    for replica_loss in report["replica_losses"]:
        assert_close(replica_loss, report["single_loss"], "float32")
    with np.load(tmp_path / "initial.npz") as initial, \
            np.load(tmp_path / "single.npz") as single, \
            np.load(tmp_path / "mirrored.npz") as mirrored:
        names = report["names"]
        updated = [name for name, key in zip(names, single.files, strict=True)
                   if not np.array_equal(single[key], initial[key])]
        # The step moved the weights, ENL blocks included: equality is not trivial.
        assert any("enl_" in name for name in updated)
        assert len(updated) > len(names) // 2
        for name, key in zip(names, single.files, strict=True):
            assert_close(mirrored[key], single[key], "float32", err_msg=name)
