"""Where ENL's torch forward loses to its own GEMM chain (issue 16, item 1).

Runs the steps of ``enl_torch.functional._FusedENL.forward`` one by one, each
timed, beside the bench's sgemm reference chain (the same four shapes,
``enl_experiments.bench.cases.enl_matmul_shapes``) and the whole block, all
in alternation, in one process, with the bench's heap setting
(``measure.reuse_freed_heap``). Two alternatives for the output GEMM are
timed too, with their residual. Prints one line of medians (ms) per N.

    .venv/bin/python docs/runs/torch-forward-breakdown/probe.py [SIDE ...]
"""

import statistics
import sys
import time
from collections import defaultdict

import torch

import enl_torch
from enl_experiments.bench import measure
from enl_experiments.bench.cases import enl_matmul_shapes
from enl_torch import functional

CHANNELS, INTER, ROUNDS, WARMUP = 256, 128, 15, 3


def probe(side: int) -> dict[str, float]:
    n = side * side
    block = enl_torch.ENL(CHANNELS, inter_channels=INTER, zero_init=False).eval()
    x = torch.randn(1, CHANNELS, side, side)
    flat = x.reshape(1, CHANNELS, n)
    with torch.no_grad():
        weight, _ = block._fused_projection()
        out_weight = block._out_projection()
    constant = torch.randn(1, CHANNELS)  # the folded biases' per-channel constant
    times = defaultdict(list)

    def step(name, call):
        begin = time.perf_counter()
        result = call()
        times[name].append(time.perf_counter() - begin)
        return result

    def enl_steps():
        projected = step("proj", lambda: torch.bmm(weight.expand(1, -1, -1), flat))
        theta, phi, g = projected.split(INTER, dim=1)
        context = step("ctx", lambda: torch.bmm(g, phi.transpose(1, 2)) / n)
        step("mean_x", lambda: flat.mean(dim=2))
        y = step("y", lambda: torch.bmm(context, theta))
        step("dct", lambda: functional._accumulate_position(y, g, side, side, (9, 9), None))
        z = step("residual_copy", lambda: flat + constant.unsqueeze(2))
        step("out_beta1", lambda: functional._add_product_(z, out_weight.expand(1, -1, -1), y))
        # Alternatives: the output GEMM fresh (beta 0) plus one in-place residual pass,
        # without the constant, and with it as an extra K column against a ones row of y.
        step("alt_out_beta0_plus_x", lambda: torch.bmm(out_weight.expand(1, -1, -1), y)
             .add_(flat))
        ones_row = torch.ones(1, INTER + 1, n)
        ones_row[:, :INTER] = y
        augmented = torch.cat([out_weight.expand(1, -1, -1), constant.unsqueeze(2)], dim=2)
        step("alt_out_k129_plus_x", lambda: torch.bmm(augmented, ones_row).add_(flat))

    shapes = enl_matmul_shapes(n, CHANNELS, INTER)
    operands = [(torch.randn(m, k), torch.randn(k, p)) for m, k, p in shapes]

    def chain():
        for name, (left, right) in zip(("ref_proj", "ref_ctx", "ref_y", "ref_out"), operands,
                                       strict=True):
            step(name, lambda a=left, b=right: torch.matmul(a, b))

    def whole():
        with torch.no_grad():
            step("ENL", lambda: block(x))

    for index in range(WARMUP + ROUNDS):
        if index == WARMUP:
            times.clear()
        enl_steps()
        chain()
        whole()
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def main(sides: list[int]) -> None:
    print(f"heap: {measure.heap_description(measure.reuse_freed_heap())}; "
          f"threads {torch.get_num_threads()}; torch {torch.__version__}")
    for side in sides:
        medians = probe(side)
        steps = sum(medians[k] for k in ("proj", "ctx", "mean_x", "y", "dct", "residual_copy",
                                         "out_beta1"))
        chain = sum(medians[k] for k in ("ref_proj", "ref_ctx", "ref_y", "ref_out"))
        print(f"N={side * side}: " + ", ".join(f"{k} {v:.2f}" for k, v in medians.items())
              + f"; ENL steps {steps:.1f}, chain {chain:.1f} ms")


if __name__ == "__main__":
    main([int(s) for s in sys.argv[1:]] or [64, 128, 256])
