"""Argument checks shared by the reference and the framework packages.

Every check raises ``ValueError`` (or ``TypeError`` for a wrong kind of value)
naming the argument and the value received, so a user never has to guess.
"""

from __future__ import annotations

import numbers

import numpy as np

DEFAULT_DCT_SIZE = (9, 9)


def positive_int(name: str, value) -> int:
    """Returns ``value`` as an int, or raises if it is not an integer >= 1."""
    return bounded_int(name, value, minimum=1)


def non_negative_int(name: str, value) -> int:
    """Returns ``value`` as an int, or raises if it is not an integer >= 0."""
    return bounded_int(name, value, minimum=0)


def bounded_int(name: str, value, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; the message names ``name`` and the value."""
    kind = "positive" if minimum == 1 else "non-negative" if minimum == 0 else f">= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be a {kind} integer, received {value!r} "
                        f"of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"`{name}` must be a {kind} integer, received {value!r}")
    return int(value)


def normalize_dct_size(dct_size) -> tuple[int, int]:
    """Returns ``(kH, kW)`` from an int or a pair of positive ints.

    Raises:
        ValueError / TypeError: naming `dct_size` and the value received.
    """
    if isinstance(dct_size, numbers.Integral) and not isinstance(dct_size, bool):
        dct_size = (dct_size, dct_size)
    if isinstance(dct_size, np.ndarray):
        dct_size = tuple(dct_size.tolist())
    if not isinstance(dct_size, (tuple, list)) or len(dct_size) != 2:
        raise ValueError(f"`dct_size` must be a positive int or a pair (kH, kW) of "
                         f"positive ints, received {dct_size!r}")
    for k in dct_size:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"`dct_size` must be a positive int or a pair (kH, kW) "
                             f"of positive ints, received {dct_size!r}")
    return int(dct_size[0]), int(dct_size[1])


def clamp_dct_size(dct_size, height: int, width: int) -> tuple[int, int]:
    """``(min(kH, H), min(kW, W))``: a grid smaller than the DCT size keeps all
    its frequencies (docs/ENL-SPEC.md, "The relative-position term")."""
    k_h, k_w = normalize_dct_size(dct_size)
    height = positive_int("height", height)
    width = positive_int("width", width)
    return min(k_h, height), min(k_w, width)


def normalize_dct_weights(dct_weights, dct_size) -> np.ndarray:
    """Returns the (kH, kW) float64 array d for ``dct_size`` (unclamped).

    ``None`` means all ones (the paper's choice). A scalar is broadcast. An
    array must have shape ``dct_size`` and finite values.
    """
    k_h, k_w = normalize_dct_size(dct_size)
    if dct_weights is None:
        return np.ones((k_h, k_w), dtype=np.float64)
    if np.iscomplexobj(dct_weights):  # float64 would drop the imaginary part
        raise TypeError(f"`dct_weights` must be real, received complex values {dct_weights!r}")
    try:
        weights = np.asarray(dct_weights, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"`dct_weights` must be None, a number or an array of shape "
                        f"{(k_h, k_w)}, received {dct_weights!r}") from error
    if weights.ndim == 0:
        weights = np.full((k_h, k_w), float(weights))
    if weights.shape != (k_h, k_w):
        raise ValueError(f"`dct_weights` must have shape dct_size={(k_h, k_w)}, "
                         f"received shape {weights.shape}")
    if not np.all(np.isfinite(weights)):
        raise ValueError(f"`dct_weights` must be finite, received {weights!r}")
    return weights


def feature_map_shape(name: str, shape, rank: int = 4) -> tuple:
    """Checks that ``shape`` has ``rank`` dimensions; returns it as a tuple."""
    shape = tuple(shape)
    if len(shape) != rank:
        raise ValueError(f"`{name}` must have rank {rank}, received shape {shape}")
    return shape
