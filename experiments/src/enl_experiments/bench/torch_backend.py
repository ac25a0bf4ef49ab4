"""PyTorch backend of the scaling section: NCHW blocks, SDPA, torch.matmul.

Imports torch only; run in its own process (torchvision after TensorFlow
segfaults, and the two runtimes would share the 2 cores).
"""

from __future__ import annotations

import gc

import torch
import torch.nn.functional as F

from enl_core.cost import NL_KIND_MODES
from enl_experiments.bench import measure
from enl_experiments.bench.cases import Case, available_implementations
from enl_experiments.bench.config import BenchConfig


class TorchBackend:
    """See :mod:`enl_experiments.bench.scaling` for the protocol."""

    name = "torch"

    def __init__(self, config: BenchConfig):
        self.config = config
        use_cuda = config.device == "cuda" or (config.device == "auto"
                                               and torch.cuda.is_available())
        if use_cuda and not torch.cuda.is_available():
            raise ValueError("`device` is 'cuda' but torch sees no CUDA device")
        self.device = torch.device("cuda" if use_cuda else "cpu")
        self.generator = torch.Generator(device="cpu").manual_seed(0)
        # Flash / memory-efficient SDPA kernels exist on CUDA and, for float32,
        # on CPU (the flash CPU kernel): no N x N score matrix is held.
        self.flash_attention = True
        # Freed CPU memory reused by the next call, as CUDA's caching allocator does.
        self.heap = (measure.reuse_freed_heap() if config.reuse_heap
                     and self.device.type == "cpu" else None)

    # -- environment -----------------------------------------------------
    def info(self) -> dict:
        info = {"torch": torch.__version__, "device": str(self.device),
                "intra_op_threads": torch.get_num_threads(),
                "inter_op_threads": torch.get_num_interop_threads(),
                "mkldnn": torch.backends.mkldnn.is_available(),
                "heap": measure.heap_description(self.heap)}
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(self.device)
            info.update(gpu=props.name, gpu_memory_bytes=props.total_memory)
        return info

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def memory_limit_bytes(self) -> int | None:
        if self.device.type == "cuda":
            return torch.cuda.get_device_properties(self.device).total_memory
        return None

    def free_bytes(self) -> int | None:
        if self.device.type == "cuda":
            return torch.cuda.mem_get_info(self.device)[0]
        import psutil

        return psutil.virtual_memory().available

    def peak_above(self, call) -> int | None:
        if self.device.type != "cuda":
            return measure.host_peak_above(call, self.sync)
        self.sync()
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        result = call()
        self.sync()
        peak = torch.cuda.max_memory_allocated(self.device) - before
        del result
        return peak

    def release(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def profile(self, side: int, backward: bool) -> dict:
        from enl_experiments.bench import profiling

        return profiling.torch_profile(side, backward, self.config.channels,
                                       self.config.inter_channels, self.device.type)

    # -- calls -----------------------------------------------------------
    def _randn(self, *shape, requires_grad=False) -> torch.Tensor:
        tensor = torch.randn(*shape, generator=self.generator).to(self.device)
        return tensor.requires_grad_(requires_grad)

    def matmul(self, m: int, k: int, n: int):
        a, b = self._randn(m, k), self._randn(k, n)
        return lambda: torch.matmul(a, b)

    def implementations(self) -> dict[str, str | None]:
        """Implementation -> None when it can run, else why not."""
        return available_implementations("enl_torch", "sdpa",
                                         "enl_compiled" if self.config.torch_compile else None)

    def _module(self, implementation: str) -> torch.nn.Module:
        import enl_torch

        c, inter = self.config.channels, self.config.inter_channels
        # zero_init=False: a trained block has a non-zero `out`; the work is the same.
        if implementation in ("enl", "enl_compiled"):
            module = enl_torch.ENL(c, inter_channels=inter, zero_init=False)
        else:
            module = enl_torch.NonLocal(c, mode=NL_KIND_MODES[implementation], inter_channels=inter,
                                        zero_init=False)
        module = module.to(self.device)
        if implementation == "enl_compiled":
            module = torch.compile(module)
        return module

    def block(self, case: Case):
        """A zero-argument call running one forward (no grad) or forward+backward."""
        batch, side = self.config.batch, case.side
        backward = case.mode == "forward_backward"
        if case.implementation == "sdpa":
            shape = (batch, 1, side * side, self.config.inter_channels)  # B, heads, N, C'
            q, k, v = (self._randn(*shape, requires_grad=backward) for _ in range(3))
            upstream = self._randn(*shape)
            if not backward:
                return _no_grad(lambda: F.scaled_dot_product_attention(q, k, v))
            return with_backward(lambda: F.scaled_dot_product_attention(q, k, v), upstream,
                                  (q, k, v), None)
        module = self._module(case.implementation)
        x = self._randn(batch, self.config.channels, side, side, requires_grad=backward)
        if not backward:
            module.eval()
            return _no_grad(lambda: module(x))
        module.train()
        return with_backward(lambda: module(x), self._randn(*x.shape), (x,), module)


def _no_grad(function):
    def call():
        with torch.no_grad():
            return function()
    return call


def with_backward(function, upstream, inputs, module):
    """One forward and backward that leaves no gradient behind.

    The gradients are dropped at the end of the call, not at the start of the
    next: freed inside a measured call, the last call's dx (or SDPA's dQ, dK,
    dV) would hand its resident pages to this call's, and the peak above the
    RSS before the call would miss them (4.6 MiB measured for SDPA at
    N = 4,096, where dQ, dK, dV and the output alone are 8 MiB).
    """
    def call():
        output = function()
        output.backward(upstream)
        del output
        for tensor in inputs:
            tensor.grad = None
        if module is not None:
            module.zero_grad(set_to_none=True)
        return None
    return call
