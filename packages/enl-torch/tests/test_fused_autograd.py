"""ENL's hand-written autograd function against the plain autograd path.

``functional.enl(..., fused=True)`` (the eager default) folds the biases and
the residual into its GEMMs and saves only x, the bias-free projection and y;
``fused=False`` is the plain tensor code TorchScript, tracing and
torch.compile use. They must compute the same numbers and gradients, the fused
backward must pass gradcheck, and it must keep only the activations listed
in :class:`enl_torch.functional._FusedENL`.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.profiler import profile

import enl_torch
from enl_core.testing import assert_close
from enl_torch import functional

CONFIGS = [dict(bias=bias, position_encoding=position, dct_weights=weights)
           for bias, position, weights in itertools.product((True, False), (True, False),
                                                            (None, "fixed", "learnable"))
           if position or weights is None]


def _arguments(seed: int, batch: int, grid: tuple[int, int], bias: bool, dct_weights,
               channels: int = 5, inter: int = 3, dct_size=(4, 3), dtype=torch.float64):
    """x and the block's tensors, each a leaf that requires grad (a fixed d does not)."""
    generator = torch.Generator().manual_seed(seed)

    def leaf(*shape, grad=True):
        return torch.randn(*shape, dtype=dtype, generator=generator).requires_grad_(grad)

    weights = None
    if dct_weights is not None:
        weights = (torch.rand(*dct_size, dtype=dtype, generator=generator) + 0.5
                   ).requires_grad_(dct_weights == "learnable")
    return (leaf(batch, channels, *grid), leaf(3 * inter, channels),
            leaf(3 * inter) if bias else None, leaf(channels, inter),
            leaf(channels) if bias else None, weights)


def _call(arguments, position_encoding: bool, fused: bool, dct_size=(4, 3)):
    x, weight, bias, out_weight, out_bias, dct_weights = arguments
    return functional.enl(x, weight, bias, out_weight, out_bias, position_encoding, dct_size,
                          dct_weights, fused=fused)


def _leaves(arguments):
    return [t for t in arguments if t is not None and t.requires_grad]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("batch, grid", [(1, (5, 4)), (2, (2, 3)), (2, (1, 1)), (1, (11, 3))])
def test_fused_equals_plain_forward_and_gradients(config, batch, grid):
    """Same output and same gradient of every leaf, float64, incl. grids smaller
    than dct_size and B = 2 (the batch slices of the fused GEMM outputs)."""
    arguments = _arguments(0, batch, grid, config["bias"], config["dct_weights"])
    upstream = torch.randn(batch, 5, *grid, dtype=torch.float64)
    results = []
    for fused in (True, False):
        z = _call(arguments, config["position_encoding"], fused)
        grads = torch.autograd.grad(z, _leaves(arguments), upstream)
        results.append((z.detach(), grads))
    (z_fused, grads_fused), (z_plain, grads_plain) = results
    assert_close(z_fused.numpy(), z_plain.numpy(), "float64")
    for fused, plain in zip(grads_fused, grads_plain, strict=True):
        assert_close(fused.numpy(), plain.numpy(), "float64", gradient=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[2], CONFIGS[3], CONFIGS[-1]], ids=str)
def test_fused_gradcheck(seed, config):
    """gradcheck (float64) of the fused function w.r.t. x and every tensor."""
    arguments = _arguments(seed, 2, (3, 4), config["bias"], config["dct_weights"])
    leaves = _leaves(arguments)

    def fn(*values):
        replaced = iter(values)
        call = [next(replaced) if t is not None and t.requires_grad else t for t in arguments]
        return _call(call, config["position_encoding"], fused=True)

    assert torch.autograd.gradcheck(fn, tuple(leaves), fast_mode=True)


def test_the_module_takes_the_fused_path_in_eager_and_plain_under_autocast():
    """ENL.forward runs the autograd function in eager float32; under autocast
    it keeps the plain path and its float32 sums."""
    module = enl_torch.ENL(8, 4, zero_init=False)
    x = torch.randn(1, 8, 6, 5, requires_grad=True)

    def block_node(z):  # under the reshape back to (B, C, H, W)
        return type(z.grad_fn.next_functions[0][0]).__name__

    assert block_node(module(x)) == "_FusedENLBackward"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "Fused" not in block_node(module(x))


def test_input_without_grad_gives_the_same_weight_gradients():
    """x that does not require grad: the fused backward skips dx only."""
    arguments = list(_arguments(3, 2, (4, 4), True, "learnable"))
    arguments[0] = arguments[0].detach()
    grads = [torch.autograd.grad(_call(arguments, True, fused).square().sum(),
                                 _leaves(arguments)) for fused in (True, False)]
    for fused, plain in zip(*grads, strict=True):
        assert_close(fused.numpy(), plain.numpy(), "float64", gradient=True)


SIDE = 64  # N = 4,096: N^2 would be 16.8 M floats


def _saved_numels(module, x) -> list[tuple[int, tuple, bool]]:
    """(numel, shape, is x) of every tensor autograd saves for the backward."""
    saved = []

    def pack(tensor):
        shares_x = tensor.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
        saved.append((tensor.numel(), tuple(tensor.shape), shares_x))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        module(x)
    return saved


def test_fused_backward_saves_only_the_listed_activations():
    """Saved for the backward: x itself, the bias-free projection (B, 3C', N),
    y (B, C', N), and small ones: the weights (3C' x C at most) and the DCT
    coefficients of g (B, C', kH, kW); nothing N x N, nothing else of
    activation size."""
    batch, channels, inter, n = 2, 16, 8, SIDE * SIDE
    module = enl_torch.ENL(channels, inter, zero_init=False, dct_weights="learnable")
    x = torch.randn(batch, channels, SIDE, SIDE, requires_grad=True)
    saved = _saved_numels(module, x)
    activations = sorted(shape for numel, shape, shares_x in saved
                         if numel >= n and not shares_x)
    assert activations == [(batch, inter, n), (batch, 3 * inter, n)], saved
    assert any(shares_x for _, _, shares_x in saved)  # x: the caller's input, no copy
    small = [numel for numel, _, shares_x in saved if numel < n]
    coefficients = batch * inter * 9 * 9
    assert max(small) <= max(3 * inter * channels, coefficients), saved
    saved_above_input = sum(numel for numel, _, shares_x in saved if not shares_x)
    assert saved_above_input <= (batch * 4 * inter * n + 4 * channels * inter + coefficients
                                 + 10 * inter * max(inter, channels)), saved


def test_the_saved_tensor_check_finds_the_affinity_in_nonlocal():
    """The same hook sees NonLocal's (B, N, N) affinity: the check is not blind."""
    n = SIDE * SIDE
    module = enl_torch.NonLocal(16, inter_channels=8, zero_init=False).to("meta")
    x = torch.randn(1, 16, SIDE, SIDE, device="meta", requires_grad=True)
    assert max(numel for numel, _, _ in _saved_numels(module, x)) >= n * n


def test_fused_path_copies_no_activation():
    """With biases, forward + backward copy no tensor of C' x N or more: the
    biases are folded into per-channel constants and the residual is one
    ``x + constant`` pass that the GEMM accumulates into (``aten::copy_`` of
    the GEMM outputs is what the plain path spends its time on)."""
    batch, channels, inter, side = 2, 32, 16, 24
    module = enl_torch.ENL(channels, inter, zero_init=False, dct_weights="learnable")
    x = torch.randn(batch, channels, side, side, requires_grad=True)
    upstream = torch.randn_like(x)
    module(x).backward(upstream)  # warm-up: lazy initialisation is not the block's
    threshold = batch * inter * side * side
    with profile(record_shapes=True) as fused:
        module(x).backward(upstream)
    copies = [e.input_shapes for e in fused.events()
              if e.name in ("aten::copy_", "aten::clone") and e.input_shapes
              and math.prod(e.input_shapes[0] or [0]) >= threshold]
    assert copies == [], copies
    # The check sees the plain path's copies.
    weight, bias = module._fused_projection()
    with profile(record_shapes=True) as plain:
        functional.enl(x, weight, bias, module._out_projection(), module.out.bias,
                       module.position_encoding, module.dct_size, module.dct_weights,
                       fused=False).backward(upstream)
    assert any(e.name == "aten::copy_" and e.input_shapes
               and math.prod(e.input_shapes[0] or [0]) >= threshold for e in plain.events())


def _backward_allocations(module, x, upstream, threshold: int) -> list[int]:
    """Bytes of each allocation of ``threshold`` bytes or more that the fused
    backward's own ops make (profiler memory records)."""
    module(x).backward(upstream)  # warm-up
    with profile(profile_memory=True, record_shapes=True) as recorded:
        module(x).backward(upstream)

    def inside_backward(event) -> bool:
        while event is not None:
            if event.name == "_FusedENLBackward":
                return True
            event = event.cpu_parent
        return False

    return sorted(e.self_cpu_memory_usage for e in recorded.events()
                  if e.self_cpu_memory_usage >= threshold and inside_backward(e))


@pytest.mark.parametrize("batch", [1, 2])
def test_fused_backward_allocates_only_dx_and_the_projection_gradient(batch):
    """At activation size the backward allocates dx (B, C, N) and the
    projection gradient (B, 3C', N), nothing else: dy (B, C', N) is computed
    in the front of dx's buffer, so no C' x N block is freed before dx is
    written (a hole the heap cannot give to dx, resident but not live)."""
    channels, inter, side = 16, 8, 32
    n = side * side
    module = enl_torch.ENL(channels, inter, zero_init=False, dct_weights="learnable")
    x = torch.randn(batch, channels, side, side, requires_grad=True)
    allocations = _backward_allocations(module, x, torch.randn_like(x), batch * inter * n * 4)
    assert allocations == sorted([batch * channels * n * 4, batch * 3 * inter * n * 4]), \
        allocations


def test_fused_backward_with_more_inter_channels_than_channels():
    """C' > C: dy does not fit in dx and gets its own buffer; same numbers as
    the plain path, also for an expanded upstream gradient (``z.sum()``)."""
    arguments = _arguments(4, 2, (4, 5), True, "learnable", channels=3, inter=5)
    for loss in (lambda z: z.sum(), lambda z: z.square().sum()):
        grads = [torch.autograd.grad(loss(_call(arguments, True, fused)), _leaves(arguments))
                 for fused in (True, False)]
        for fused, plain in zip(*grads, strict=True):
            assert_close(fused.numpy(), plain.numpy(), "float64", gradient=True)
    leaves = _leaves(arguments)

    def fn(*values):
        replaced = iter(values)
        return _call([next(replaced) if t is not None and t.requires_grad else t
                      for t in arguments], True, fused=True)

    assert torch.autograd.gradcheck(fn, tuple(leaves), fast_mode=True)
