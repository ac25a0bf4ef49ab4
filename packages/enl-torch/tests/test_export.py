"""ENL under torch.compile (dynamic H, W, no recompilation), TorchScript and ONNX."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

import enl_torch
from enl_core.testing import assert_close

GRIDS = [(5, 7), (12, 10), (3, 20), (9, 9), (16, 4)]


def _block(**kwargs):
    torch.manual_seed(0)
    module = enl_torch.ENL(8, 4, zero_init=False, dct_weights="learnable", **kwargs)
    with torch.no_grad():
        module.dct_weights.uniform_(0.5, 1.5)
    return module


def _compile_and_count(backend: str):
    """Runs forward + backward at every grid, failing on any recompilation after
    the first; returns (dynamo graphs, AOT-autograd compilations)."""
    torch._dynamo.reset()
    counters.clear()
    module = _block()
    compiled = torch.compile(module, dynamic=True, fullgraph=True, backend=backend)
    for number, grid in enumerate(GRIDS):
        torch._dynamo.config.error_on_recompile = number > 0
        x = torch.randn(2, 8, *grid)
        inputs = x.clone().requires_grad_()
        z = compiled(inputs)
        z.square().sum().backward()
        reference = x.clone().requires_grad_()
        expected = module(reference)
        expected.square().sum().backward()
        assert_close(z.detach().numpy(), expected.detach().numpy(), "float32")
        assert_close(inputs.grad.numpy(), reference.grad.numpy(), "float32", gradient=True)
    torch._dynamo.config.error_on_recompile = False
    return counters["stats"]["unique_graphs"], counters["aot_autograd"]["total"]


def test_compile_dynamic_traces_once_for_all_sizes():
    """One dynamo graph serves five grids, forward and backward (aot_eager
    backend: the same tracing as inductor, without its C++ compile)."""
    try:
        assert _compile_and_count("aot_eager") == (1, 1)
    finally:
        torch._dynamo.config.error_on_recompile = False


def test_compile_dynamic_inference_path():
    """Without autograd ENL takes its in-place path; it compiles once too."""
    torch._dynamo.reset()
    counters.clear()
    module = _block()
    compiled = torch.compile(module, dynamic=True, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        for grid in GRIDS[:3]:
            x = torch.randn(2, 8, *grid)
            assert_close(compiled(x).numpy(), module(x).numpy(), "float32")
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.slow
def test_compile_inductor_dynamic():
    """The default inductor backend (about a minute of C++ compilation)."""
    try:
        assert _compile_and_count("inductor") == (1, 1)
    finally:
        torch._dynamo.config.error_on_recompile = False


@pytest.mark.parametrize("cls, kwargs", [
    (enl_torch.ENL, dict(dct_weights="learnable", zero_init=False)),
    (enl_torch.ENL, dict(use_bias=False, position_encoding=False, zero_init=False)),
    (enl_torch.NonLocal, dict(sub_sample=True, zero_init=False)),
    (enl_torch.NonLocal, dict(mode="dot_product", position_encoding=True, zero_init=False)),
])
def test_torchscript_script_any_size_and_save_load(cls, kwargs):
    torch.manual_seed(0)
    module = cls(8, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still shipped
        scripted = torch.jit.script(module)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
    for grid in [(4, 6), (13, 9), (2, 2)]:
        x = torch.randn(2, 8, *grid)
        assert_close(loaded(x).detach().numpy(), module(x).detach().numpy(), "float32")


def test_torchscript_trace():
    module = _block()
    x = torch.randn(2, 8, 6, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (x,))
    assert_close(traced(x).detach().numpy(), module(x).detach().numpy(), "float32")


def test_onnx_dynamic_height_width_in_onnxruntime():
    """Exported once at 12 x 10; onnxruntime agrees with eager at other sizes."""
    onnxruntime = pytest.importorskip("onnxruntime")
    module = _block().eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript-based exporter: dynamic_axes needs no onnxscript.
        torch.onnx.export(module, (torch.randn(1, 8, 12, 10),), buffer, dynamo=False,
                          input_names=["x"], output_names=["z"],
                          dynamic_axes={"x": {0: "B", 2: "H", 3: "W"},
                                        "z": {0: "B", 2: "H", 3: "W"}})
    session = onnxruntime.InferenceSession(buffer.getvalue(),
                                           providers=["CPUExecutionProvider"])
    for shape in [(1, 8, 12, 10), (3, 8, 7, 19), (2, 8, 1, 1), (1, 8, 33, 4)]:
        x = torch.randn(*shape)
        (z,) = session.run(None, {"x": x.numpy()})
        assert z.shape == shape
        assert_close(z, module(x).detach().numpy(), "float32")
        assert np.isfinite(z).all()
