"""The README's PyTorch quickstart runs as written."""

from __future__ import annotations

import contextlib
import io

import numpy as np

import enl_core


def test_torch_quickstart(readme_example, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(readme_example("torch-quickstart"), "README.md", "exec"), {})
    assert "torch.Size([1, 40, 48])" in printed.getvalue()
    weights = enl_core.load_npz(tmp_path / "enl_block.npz")
    assert weights.channels == 256 and weights.inter_channels == 128
    assert np.any(weights.out_kernel != 0)  # the training step moved the zero-initialised out
