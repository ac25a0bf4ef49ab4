"""Comparisons shared by the parity tests, on top of ``enl_core.testing``."""

from __future__ import annotations

import numpy as np
import parity_protocol as protocol

from enl_core.testing import assert_close


def assert_gradients_close(actual: dict, expected: dict, context: str) -> None:
    """``assert_close`` on all of a block's gradient tensors at once.

    One comparison over the concatenation, so the absolute tolerance is
    scaled by the block's largest gradient: a gradient that is zero in exact
    arithmetic (phi's bias under the softmax, which is shift-invariant) is a
    float32 sum of cancelling terms, and only that scale says how small its
    rounding is. A failure names each tensor and its largest difference.
    """
    names = list(expected)
    try:
        assert_close(np.concatenate([np.ravel(actual[n]) for n in names]),
                     np.concatenate([np.ravel(expected[n]) for n in names]),
                     protocol.DTYPE, gradient=True)
    except AssertionError as error:
        worst = "\n".join(
            f"  {name}: max |difference| {np.max(np.abs(actual[name] - expected[name])):.3g}, "
            f"max |expected| {np.max(np.abs(expected[name])):.3g}" for name in names)
        raise AssertionError(f"{context}\n{worst}\n{error}") from None


def projected_gradients(result: dict, case: dict, names, implementation: str) -> dict:
    """``<grad, v>`` for each of the case's directions v of each tensor: what
    the reference's central differences estimate."""
    projected = {}
    for name in names:
        grad, directions = result[f"grad.{name}"], case[f"v.{name}"]
        assert grad.shape == directions.shape[1:], (
            f"{implementation}: gradient w.r.t. {name} has shape {grad.shape}, "
            f"expected {directions.shape[1:]}")
        projected[name] = np.tensordot(directions, grad.astype(np.float64), axes=grad.ndim)
    return projected
