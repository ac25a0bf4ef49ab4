"""Mixed precision as a contract: float16 / bfloat16 against the float64 reference.

For ``mixed_float16`` and ``mixed_bfloat16``, ENL and both NonLocal modes
return finite outputs within the dtype's tolerance (``enl_core.testing``)
whenever the float64 reference output is representable in that dtype. The
reference is evaluated on what the layer computes with: the input and the
weights rounded to the compute dtype (the policy casts both), so the check
measures the block's own arithmetic, not the rounding of its arguments.

Runs under every Keras backend (one process each). The default suite uses
N = 32 x 32; N = 256 x 256 = 65,536 is ``slow`` (NonLocal there only with
``sub_sample``: its full N x N affinity at 65,536 positions is 17 GB in float32).
"""

from __future__ import annotations

import keras
import ml_dtypes
import numpy as np
import pytest

import enl_core
import enl_keras
from enl_core.testing import assert_close

CHANNELS, INTER = 8, 4
DTYPES = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}

# name: (layer class, kwargs, reference)
BLOCKS = {
    "enl": (enl_keras.ENL, {}, enl_core.enl_block),
    "nl_embedded_gaussian": (enl_keras.NonLocal, {"mode": "embedded_gaussian"},
                             enl_core.nonlocal_block),
    "nl_dot_product": (enl_keras.NonLocal, {"mode": "dot_product"}, enl_core.nonlocal_block),
}
# The NL reference is built this many query rows at a time (its whole float64
# affinity at N = 65,536 would be 32 GiB).
QUERY_CHUNK = 2048


def rounded(array, dtype):
    """``array`` rounded to ``dtype`` and back to float64."""
    return np.asarray(array).astype(DTYPES[dtype]).astype(np.float64)


def check_contract(name, dtype, grid, input_scale, out_scale=1.0, seed=0, sub_sample=False):
    """Runs one case; returns the reference's largest magnitude (for the caller)."""
    cls, kwargs, reference = BLOCKS[name]
    reference_kwargs = {}
    if cls is enl_keras.NonLocal:
        kwargs = {**kwargs, "sub_sample": sub_sample}
        reference_kwargs = {**kwargs, "query_chunk": QUERY_CHUNK}
    params = enl_core.init_params(CHANNELS, INTER, seed=seed)
    weights = params.as_dict()
    weights["out.kernel"] = weights["out.kernel"] * out_scale
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1, *grid, CHANNELS)) * input_scale
    layer = cls(inter_channels=INTER, dtype=f"mixed_{dtype}", **kwargs)
    layer.set_block_weights(weights)
    actual = np.asarray(keras.ops.convert_to_numpy(
        keras.ops.cast(layer(x.astype("float32")), "float32")), np.float64)
    expected = reference(rounded(x, dtype), enl_core.params.BlockParams.from_dict(
        {key: rounded(value, dtype) for key, value in weights.items()}), **reference_kwargs)
    largest = float(np.max(np.abs(expected)))
    # The contract's premise, checked so that no case passes vacuously.
    assert largest < float(ml_dtypes.finfo(DTYPES[dtype]).max), (name, dtype, largest)
    assert np.all(np.isfinite(actual)), (
        f"{name} {dtype}: {np.mean(~np.isfinite(actual)):.1%} non-finite outputs, "
        f"reference max |z| = {largest:.3g}")
    assert_close(actual, expected, dtype, err_msg=f"{name} {dtype} grid {grid}")
    return largest


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("name", sorted(BLOCKS))
@pytest.mark.parametrize("input_scale", [1.0, 10.0])
def test_outputs_are_finite_and_within_tolerance(name, dtype, input_scale):
    check_contract(name, dtype, (32, 32), input_scale)


@pytest.mark.parametrize("input_scale", [30.0, 60.0])
def test_enl_float16_where_theta_phi_g_overflows_float16(input_scale):
    """The mix ``theta (phi g) / N`` is cubic in x: at x ~ 30 it exceeds
    float16's 65,504 although, with a small ``out`` kernel, z stays in range."""
    largest = check_contract("enl", "float16", (64, 64), input_scale, out_scale=1e-3)
    assert largest > 50  # a large but representable output


def test_nonlocal_bfloat16_softmax_of_large_logits():
    """Large logits (input std 10): the softmax is only as accurate as they are."""
    check_contract("nl_embedded_gaussian", "bfloat16", (16, 16), 10.0)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_enl_at_n_65536(dtype):
    check_contract("enl", dtype, (256, 256), 10.0, out_scale=1e-2)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("name", ["nl_embedded_gaussian", "nl_dot_product"])
@pytest.mark.parametrize("side, sub_sample", [(64, False), (128, False), (256, True)])
def test_nonlocal_at_large_n(name, dtype, side, sub_sample):
    """N = 4,096 and 16,384; with the keys pooled 2x2 (N' = 16,384), N = 65,536.
    The full NL at 65,536 does not fit this machine (16 GiB per affinity)."""
    check_contract(name, dtype, (side, side), 10.0, sub_sample=sub_sample)
