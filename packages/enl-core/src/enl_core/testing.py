"""Tolerances and comparisons shared by every test suite in the repository.

The one place where "close enough" is defined, per dtype (STYLE.md rule 4).
Frameworks pass their dtype's name ("float32", "bfloat16", ...).
"""

from __future__ import annotations

import numpy as np

from enl_core import dct

# (rtol, atol) for comparing an implementation to the float64 reference at
# the sizes the tests use (N up to a few thousand, C up to 64), values O(1).
TOLERANCES = {
    "float64": (1e-9, 1e-10),
    "float32": (1e-5, 1e-5),
    "float16": (2e-2, 2e-2),
    "bfloat16": (5e-2, 5e-2),
}
# Gradients go through one more product; float32 needs a little more room.
GRADIENT_TOLERANCES = {
    "float64": (1e-8, 1e-9),
    "float32": (5e-5, 5e-5),
    "float16": (5e-2, 5e-2),
    "bfloat16": (1e-1, 1e-1),
}
# Max error of a 1D DCT basis against the float64 one, each entry scaled by
# sqrt(n / 2) to a cos of amplitude 1, on grids up to n = 65,536 with the first
# 9 frequencies. float32 holds it only with the phase reduced modulo 4n
# (enl_core.dct.dct_phase): unreduced, the error reaches 2.3e-6 (measured).
DCT_BASIS_TOLERANCES = {"float64": 1e-12, "float32": 1e-6}


def dtype_name(dtype) -> str:
    """"float32" for np.float32, torch.float32, tf.float32, "float32", ..."""
    name = getattr(dtype, "name", None) or str(dtype)
    name = name.replace("torch.", "").replace("<dtype: '", "").replace("'>", "")
    if name not in TOLERANCES:
        raise ValueError(f"`dtype` has no tolerance defined, received {dtype!r}")
    return name


def tolerance(dtype, gradient: bool = False) -> tuple[float, float]:
    """(rtol, atol) for ``dtype``."""
    table = GRADIENT_TOLERANCES if gradient else TOLERANCES
    return table[dtype_name(dtype)]


def assert_close(actual, expected, dtype="float32", gradient: bool = False,
                 err_msg: str = "") -> None:
    """``np.testing.assert_allclose`` with the tolerance of ``dtype``.

    The absolute tolerance is scaled by the largest magnitude of ``expected``
    so that the check is relative for large activations.
    """
    rtol, atol = tolerance(dtype, gradient)
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale, err_msg=err_msg)


def max_relative_error(actual, expected) -> float:
    """``max |a - e| / max |e|``: one number for large-N precision checks."""
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-30))


def dct_basis_error(basis, size: int) -> float:
    """Max error of ``basis`` (n, k), a framework's first k columns of the 1D
    DCT-II basis of length ``size`` (columns ``k >= size`` zero), against
    :func:`enl_core.dct.dct_basis`, scaled by ``sqrt(n / 2)`` (so the error of
    a cos of amplitude 1; compare with :data:`DCT_BASIS_TOLERANCES`)."""
    basis = np.asarray(basis, dtype=np.float64)
    if basis.ndim != 2 or basis.shape[0] != size:
        raise ValueError(f"`basis` must have shape ({size}, k), received shape {basis.shape}")
    kept = min(size, basis.shape[1])
    expected = np.zeros_like(basis)
    expected[:, :kept] = dct.dct_basis(size, kept)
    return float(np.max(np.abs(basis - expected)) * np.sqrt(size / 2.0))
