"""The parameter layout of one (E)NL block, shared by every framework.

Kernels are stored as ``(in, out)`` matrices: a 1x1 convolution over channels
is ``x @ kernel + bias``. This is the Keras ``Conv2D`` kernel ``(1, 1, in, out)``
with the two unit axes dropped, and the transpose of the PyTorch ``Conv2d``
weight ``(out, in, 1, 1)``.

The framework-neutral interchange file is an ``.npz`` with these names
(``WEIGHT_NAMES``), float32 or float64, plus ``dct_weights`` when the block has
learnable or custom DCT weights:

=================  ===========  =======================================
name               shape        meaning
=================  ===========  =======================================
``theta.kernel``   (C, C')      theta projection (eq. 5)
``theta.bias``     (C',)
``phi.kernel``     (C, C')      phi projection (eq. 5)
``phi.bias``       (C',)
``g.kernel``       (C, C')      g projection (eq. 1)
``g.bias``         (C',)
``out.kernel``     (C', C)      output projection (eq. 4), zero at init
``out.bias``       (C,)
``dct_weights``    (kH, kW)     d, optional (eq. 10)
=================  ===========  =======================================
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from enl_core.validation import normalize_dct_size, normalize_dct_weights, positive_int

PROJECTIONS = ("theta", "phi", "g", "out")
WEIGHT_NAMES = tuple(f"{p}.{k}" for p in PROJECTIONS for k in ("kernel", "bias"))


def default_inter_channels(channels: int) -> int:
    """C' = max(C // 2, 1), the spec's default."""
    return max(positive_int("channels", channels) // 2, 1)


@dataclasses.dataclass
class BlockParams:
    """Weights of one block in the shared layout (see the module docstring)."""

    theta_kernel: np.ndarray
    theta_bias: np.ndarray
    phi_kernel: np.ndarray
    phi_bias: np.ndarray
    g_kernel: np.ndarray
    g_bias: np.ndarray
    out_kernel: np.ndarray
    out_bias: np.ndarray
    dct_weights: np.ndarray | None = None

    def __post_init__(self):
        for name in WEIGHT_NAMES:
            attr = name.replace(".", "_")
            setattr(self, attr, np.asarray(getattr(self, attr)))
        channels, inter = self.theta_kernel.shape if self.theta_kernel.ndim == 2 else (None, None)
        if channels is None:
            raise ValueError(f"`theta.kernel` must be a (C, C') matrix, received shape "
                             f"{self.theta_kernel.shape}")
        expected = {
            "theta.kernel": (channels, inter), "theta.bias": (inter,),
            "phi.kernel": (channels, inter), "phi.bias": (inter,),
            "g.kernel": (channels, inter), "g.bias": (inter,),
            "out.kernel": (inter, channels), "out.bias": (channels,),
        }
        for name, shape in expected.items():
            actual = getattr(self, name.replace(".", "_")).shape
            if actual != shape:
                raise ValueError(f"`{name}` must have shape {shape} (C={channels}, "
                                 f"C'={inter}), received shape {actual}")
        if self.dct_weights is not None:
            self.dct_weights = np.asarray(self.dct_weights)
            if self.dct_weights.ndim != 2:
                raise ValueError(f"`dct_weights` must be a (kH, kW) matrix, received "
                                 f"shape {self.dct_weights.shape}")

    @property
    def channels(self) -> int:
        return int(self.theta_kernel.shape[0])

    @property
    def inter_channels(self) -> int:
        return int(self.theta_kernel.shape[1])

    def as_dict(self) -> dict[str, np.ndarray]:
        """The interchange names mapped to arrays (``dct_weights`` if set)."""
        weights = {name: getattr(self, name.replace(".", "_")) for name in WEIGHT_NAMES}
        if self.dct_weights is not None:
            weights["dct_weights"] = self.dct_weights
        return weights

    @classmethod
    def from_dict(cls, weights) -> BlockParams:
        """Inverse of :meth:`as_dict`; raises naming any missing or extra key."""
        keys = set(weights)
        missing = [name for name in WEIGHT_NAMES if name not in keys]
        extra = sorted(keys - set(WEIGHT_NAMES) - {"dct_weights"})
        if missing or extra:
            raise ValueError(f"block weights must have keys {list(WEIGHT_NAMES)} "
                             f"(+ optional 'dct_weights'); missing {missing}, "
                             f"unexpected {extra}")
        kwargs = {name.replace(".", "_"): np.asarray(weights[name]) for name in WEIGHT_NAMES}
        dct = weights["dct_weights"] if "dct_weights" in keys else None
        return cls(**kwargs, dct_weights=None if dct is None else np.asarray(dct))

    def astype(self, dtype) -> BlockParams:
        return BlockParams.from_dict({k: v.astype(dtype) for k, v in self.as_dict().items()})

    def num_params(self) -> int:
        return int(sum(v.size for v in self.as_dict().values()))


def init_params(channels: int, inter_channels: int | None = None, *, seed=0,
                zero_init: bool = False, scale: float | None = None,
                dct_size=None, dct_weights=None) -> BlockParams:
    """Random weights in the shared layout, for tests and examples.

    ``zero_init=True`` zeroes ``out`` as the frameworks do by default (the
    block starts as the identity). ``scale`` defaults to 1/sqrt(fan_in).
    ``dct_size`` with ``dct_weights`` (an array, or "random") adds d.
    """
    channels = positive_int("channels", channels)
    inter = default_inter_channels(channels) if inter_channels is None else positive_int(
        "inter_channels", inter_channels)
    rng = np.random.default_rng(seed)

    def dense(fan_in, fan_out):
        std = (1.0 / np.sqrt(fan_in)) if scale is None else scale
        return rng.normal(0.0, std, size=(fan_in, fan_out)), rng.normal(0.0, 0.1, size=fan_out)

    theta = dense(channels, inter)
    phi = dense(channels, inter)
    g = dense(channels, inter)
    out = dense(inter, channels)
    if zero_init:
        out = (np.zeros_like(out[0]), np.zeros_like(out[1]))
    dct = None
    if dct_size is not None and dct_weights is not None:
        if isinstance(dct_weights, str) and dct_weights == "random":
            dct = rng.uniform(0.5, 1.5, size=normalize_dct_size(dct_size))
        else:
            dct = normalize_dct_weights(dct_weights, dct_size)
    return BlockParams(*theta, *phi, *g, *out, dct_weights=dct)


def save_npz(path: str | os.PathLike, params: BlockParams) -> None:
    """Writes the framework-neutral interchange file."""
    np.savez(path, **params.as_dict())


def load_npz(path: str | os.PathLike) -> BlockParams:
    """Reads a file written by :func:`save_npz` (or by any framework package)."""
    with np.load(path) as data:
        return BlockParams.from_dict({k: data[k] for k in data.files})
