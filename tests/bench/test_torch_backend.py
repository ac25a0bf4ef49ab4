"""The torch scaling backend's calls (enl_experiments.bench.torch_backend): what they
leave behind, and that a peak measured after timed calls still sees the whole backward."""

import sys

import pytest

torch = pytest.importorskip("torch")

from enl_experiments.bench import cases, measure  # noqa: E402
from enl_experiments.bench.config import BenchConfig  # noqa: E402
from enl_experiments.bench.torch_backend import TorchBackend, with_backward  # noqa: E402


def test_a_backward_call_leaves_no_gradient_alive():
    x = torch.randn(2, 3, requires_grad=True)
    layer = torch.nn.Linear(3, 4)
    call = with_backward(lambda: layer(x), torch.ones(2, 4), (x,), layer)
    assert call() is None
    assert x.grad is None and all(p.grad is None for p in layer.parameters())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc high-water mark")
@pytest.mark.parametrize("implementation, side", [("sdpa", 64), ("enl", 64), ("enl", 192)])
def test_a_peak_taken_after_timed_calls_is_not_below_the_lower_bound(implementation, side):
    """The scaling section times an entry, then measures its peak with the same call.
    Gradients kept from one call to the next were freed inside the measured one and
    their resident pages reused: SDPA's forward+backward at N = 4,096 measured 4.6 MiB
    where dQ, dK, dV and the output alone are 8 MiB. At side 192 the input (36 MiB) is
    above glibc's largest default mmap threshold, so it lives in the heap the backend
    keeps for reuse (``reuse_heap``), and the peak must still see it all."""
    config = BenchConfig(channels=256, inter_channels=128, device="cpu")
    backend = TorchBackend(config)
    assert backend.heap is not None or not sys.platform.startswith("linux")
    case = cases.Case("torch", implementation, side, "forward_backward", macs=1, input_bytes=0,
                      predicted_bytes=0)
    call = backend.block(case)
    for _ in range(3):  # the timed calls before the peak
        call()
    peak = backend.peak_above(call)
    bound = cases.lower_bound_bytes(implementation, side, config, "forward_backward",
                                    flash_attention=backend.flash_attention)
    assert peak is not None and peak >= bound, (peak / 2**20, bound / 2**20)
    measure.release_free_memory()
