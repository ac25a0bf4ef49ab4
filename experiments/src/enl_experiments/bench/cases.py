"""The block-scaling grid and what each entry is predicted to cost, before it runs.

Every (implementation, N, mode) entry gets its multiply-adds and a peak-memory
prediction from ``enl_core.cost`` first. An entry whose prediction exceeds the
device memory is reported "infeasible" and never tried (NL at N = 65,536 needs
the 17 GB N x N affinity); one that would take longer than ``max_call_s`` per
call, or more memory than is free right now, is "skipped" with the reason.
Nothing is dropped: the report lists every entry with its status.
"""

from __future__ import annotations

import dataclasses
import importlib

from enl_core import cost
from enl_experiments.bench.config import BLOCK_MODES, GIB, BenchConfig

FLOAT32_BYTES = 4

# implementation -> (enl_core.cost kind, what it is). "sdpa" and "keras_dpa" are
# the attention core alone, softmax(Q K^T / sqrt(C')) V on given Q, K, V: no
# projections, so they are a lower bound on any attention-based NL block.
IMPLEMENTATIONS = {
    "enl": ("enl", "ENL (position term on, 9x9 DCT, separable)"),
    "nl_dot_product": ("nl_dot_product", "NonLocal, dot product, N x N affinity"),
    "nl_embedded_gaussian": ("nl_embedded_gaussian", "NonLocal, embedded Gaussian (softmax)"),
    "sdpa": (None, "torch scaled_dot_product_attention core (Q, K, V given)"),
    "keras_dpa": (None, "keras.ops.dot_product_attention core (Q, K, V given)"),
    "enl_xla": ("enl", "ENL under tf.function(jit_compile=True)"),
    "enl_compiled": ("enl", "ENL under torch.compile"),
}


def available_implementations(package: str, attention: str,
                              extra: str | None = None) -> dict[str, str | None]:
    """Implementation -> None when it can run here, else why not.

    ENL and both NL modes come from ``package`` (``enl_torch`` or
    ``enl_keras``) and run when it imports; ``attention`` (the framework's own
    attention core) always runs; ``extra`` is an optional compiled ENL entry.
    """
    try:
        importlib.import_module(package)
        missing = None
    except ImportError as error:
        missing = f"{package} not importable: {error}"
    names = {"enl": missing, "nl_dot_product": missing, "nl_embedded_gaussian": missing,
             attention: None}
    if extra is not None:
        names[extra] = missing
    return names

# Backward: every matmul C = A B has two more of the same size (dA = dC B^T,
# dB = A^T dC), so a forward+backward pass does 3x the forward multiply-adds.
BACKWARD_FACTOR = {"forward": 1, "forward_backward": 3}

# Peak-memory model, in units of enl_core.cost's peak_floats: the N x N
# affinity and one same-size copy (its softmax or its 1/N scaling) in forward;
# their two gradients on top in forward+backward. ENL's live tensors are all
# O(N C'), so the same factors bound it comfortably.
MEMORY_FACTOR = {"forward": 2, "forward_backward": 4}


@dataclasses.dataclass(frozen=True)
class Case:
    """One entry of the scaling table, before it runs."""

    framework: str
    implementation: str
    side: int
    mode: str
    macs: int
    input_bytes: int
    predicted_bytes: int
    status: str = "run"  # "run", "infeasible" or "skipped"
    reason: str = ""
    lower_bound_bytes: int = 0  # below it a measured peak cannot be right
    floor_bytes: int = 0  # ENL: what enl_torch's ENL keeps live at its peak; 0: no model

    @property
    def n(self) -> int:
        return self.side * self.side


def attention_macs(n: int, inter_channels: int) -> int:
    """softmax(Q K^T) V on N positions: two N x N x C' products."""
    return 2 * n * n * inter_channels


def case_macs(implementation: str, side: int, config: BenchConfig, mode: str) -> int:
    """Exact multiply-adds of one call, per the enl_core cost model (x batch, x backward)."""
    kind, _ = IMPLEMENTATIONS[implementation]
    if kind is None:
        per_image = attention_macs(side * side, config.inter_channels)
    else:
        per_image = cost.block_cost(side, side, config.channels, config.inter_channels, kind=kind,
                                    position_encoding=kind == "enl").macs
    return per_image * config.batch * BACKWARD_FACTOR[mode]


def predicted_peak_bytes(implementation: str, side: int, config: BenchConfig, mode: str,
                         flash_attention: bool = False) -> int:
    """Peak bytes above the input, modelled from ``enl_core.cost.block_cost``.

    ``flash_attention``: the SDPA kernel streams the scores (torch's flash /
    memory-efficient kernels), so no N x N matrix is held.
    """
    n = side * side
    kind, _ = IMPLEMENTATIONS[implementation]
    if kind is None:
        qkv = 4 * n * config.inter_channels  # Q, K, V, output
        scores = 0 if flash_attention else n * n
        floats = qkv + scores
    else:
        floats = cost.block_cost(side, side, config.channels, config.inter_channels,
                                 kind=kind, position_encoding=kind == "enl").peak_floats
    output = n * config.channels if kind is not None else 0
    return (MEMORY_FACTOR[mode] * floats + output) * FLOAT32_BYTES * config.batch


def lower_bound_bytes(implementation: str, side: int, config: BenchConfig, mode: str,
                      flash_attention: bool = False) -> int:
    """Bytes above the input that any correct run of the entry must hold at once.

    The output is being written while the largest intermediate it is computed
    from is live: the N x N' affinity for NL (``enl_core.cost``'s
    ``affinity_floats``; the score matrix for SDPA without a flash kernel),
    ``y`` (N C') for ENL. Forward + backward also ends with the input gradient
    written while the output is held. A measured peak below this misses
    allocations (the method is blind to them), and the bench fails its check.
    """
    n = side * side
    kind, _ = IMPLEMENTATIONS[implementation]
    if kind is None:
        output = n * config.inter_channels
        largest = 0 if flash_attention else n * n
        input_gradient = 3 * n * config.inter_channels  # dQ, dK, dV
    else:
        output = n * config.channels
        largest = (n * config.inter_channels if kind == "enl" else
                   cost.block_cost(side, side, config.channels, config.inter_channels,
                                   kind=kind).affinity_floats)
        input_gradient = n * config.channels
    floats = output + largest if mode == "forward" else output + max(largest, input_gradient)
    return floats * FLOAT32_BYTES * config.batch


def enl_floor_bytes(side: int, config: BenchConfig, mode: str) -> int:
    """Bytes above the input live at the peak of ENL's hand-written backward.

    Both frameworks' float32 blocks keep the same tensors: ``enl_torch``'s
    autograd function and ``enl_keras.ops.fused_enl`` (a custom gradient).

    Forward: the bias-free projection ``[theta0; phi0; g0]`` (3 C' N), ``y``
    (C' N) and the output z (C N) being written. Forward + backward: the saved
    projection and y, the output z the caller holds, the projection's gradient
    (3 C' N), and the larger of ``dy`` (C' N, freed before dx) and dx (C N).
    C x C', C' x C' and DCT-coefficient tensors are below 1% at the bench's N
    and left out. At C' = C / 2: 3.0x the input forward, 5.5x forward + backward.
    """
    n, channels, inter = side * side, config.channels, config.inter_channels
    saved = 3 * inter + inter + channels  # per position
    floats = saved if mode == "forward" else saved + 3 * inter + max(inter, channels)
    return floats * n * FLOAT32_BYTES * config.batch


def classify(case: Case, limit_bytes: int, available_bytes: int | None,
             throughput_flops: float | None, max_call_s: float,
             always_run_n: int = 0, measured: tuple[int, float] | None = None,
             hard_max_call_s: float = float("inf")) -> Case:
    """Decides whether a case runs, from its predictions; returns it with a status.

    Args:
        limit_bytes: the device's memory; above it the case is "infeasible".
        available_bytes: memory free now (None: unknown); above it, "skipped".
        throughput_flops: measured matmul FLOP/s used to predict the call time
            (None: no time prediction).
        max_call_s: a predicted single call slower than this is "skipped".
        always_run_n: cases with N up to this ignore ``max_call_s`` (the targets
            compare ENL with NL and attention there, so they must run)...
        measured: ``(macs, seconds)`` of the same implementation and mode at a
            smaller N, when one ran: the time prediction is then the larger of
            the sgemm-rate one and this one scaled by the MAC ratio.
        hard_max_call_s: ...but never one predicted slower than this.
    """
    if case.predicted_bytes > limit_bytes:
        return dataclasses.replace(
            case, status="infeasible",
            reason=f"needs ~{case.predicted_bytes / GIB:.1f} GiB > {limit_bytes / GIB:.0f} GiB "
                   f"device memory (enl_core.cost model)")
    if available_bytes is not None and case.predicted_bytes > 0.8 * available_bytes:
        return dataclasses.replace(
            case, status="skipped",
            reason=f"needs ~{case.predicted_bytes / GIB:.1f} GiB, only "
                   f"{available_bytes / GIB:.1f} GiB free now")
    seconds, basis = predicted_seconds(case, throughput_flops, measured)
    limit_s = hard_max_call_s if case.n <= always_run_n else max_call_s
    if seconds is not None and seconds > limit_s:
        return dataclasses.replace(
            case, status="skipped",
            reason=f"predicted {seconds:.0f} s per call ({basis}) > {limit_s:g} s")
    return case


def predicted_seconds(case: Case, throughput_flops: float | None,
                      measured: tuple[int, float] | None) -> tuple[float | None, str]:
    """Seconds one call of ``case`` should take, and what the guess rests on."""
    guesses = []
    if throughput_flops:
        guesses.append((2 * case.macs / throughput_flops, "at the measured sgemm rate"))
    if measured:
        macs, seconds = measured
        guesses.append((seconds * case.macs / macs, "scaled from a smaller N by MACs"))
    if not guesses:
        return None, ""
    return max(guesses)


def build_cases(framework: str, implementations, config: BenchConfig,
                flash_attention: bool = False) -> list[Case]:
    """Every (implementation, side, mode) case of one framework, status "run"."""
    cases = []
    for implementation in implementations:
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"`implementations` must be among {sorted(IMPLEMENTATIONS)}, "
                             f"received {implementation!r}")
        for side in config.sides:
            for mode in BLOCK_MODES:
                n = side * side
                input_bytes = config.batch * n * config.channels * FLOAT32_BYTES
                if IMPLEMENTATIONS[implementation][0] is None:
                    input_bytes = 3 * config.batch * n * config.inter_channels * FLOAT32_BYTES
                cases.append(Case(
                    framework, implementation, side, mode,
                    macs=case_macs(implementation, side, config, mode),
                    input_bytes=input_bytes,
                    predicted_bytes=predicted_peak_bytes(implementation, side, config, mode,
                                                         flash_attention),
                    lower_bound_bytes=lower_bound_bytes(implementation, side, config, mode,
                                                        flash_attention),
                    floor_bytes=(enl_floor_bytes(side, config, mode)
                                 if IMPLEMENTATIONS[implementation][0] == "enl" else 0)))
    return cases


def enl_matmul_shapes(n: int, channels: int, inter_channels: int) -> list[tuple[int, int, int]]:
    """(M, K, N') of the matmuls an ideal ENL forward does on N positions.

    The fused theta/phi/g projection (N, C) @ (C, 3C'), ``phi^T g``
    (C', N) @ (N, C'), ``theta [phi g]`` (N, C') @ (C', C') and ``out``
    (N, C') @ (C', C): the sgemm reference ENL's efficiency is measured against.
    """
    return [(n, channels, 3 * inter_channels), (inter_channels, n, inter_channels),
            (n, inter_channels, inter_channels), (n, inter_channels, channels)]


def backward_shapes(shape: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """The two matmuls of the backward of (M, K) @ (K, N'): dA = dC B^T, dB = A^T dC."""
    m, k, n = shape
    return [(m, n, k), (k, m, n)]
