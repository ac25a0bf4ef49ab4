"""Log-log slope fitting (enl_experiments.bench.fitting)."""

import numpy as np
import pytest

from enl_experiments.bench.fitting import loglog_slope


@pytest.mark.parametrize("power", [0.5, 1.0, 2.0])
def test_exact_power_law(power):
    sizes = [4096, 9216, 16384, 36864, 65536]
    times = [3e-9 * n**power for n in sizes]
    assert loglog_slope(sizes, times) == pytest.approx(power, abs=1e-9)


def test_linear_time_plus_constant_overhead_bends_below_one():
    # A fixed overhead flattens the curve: the fit sees slope < 1, never > 1.
    sizes = [4096, 16384, 65536]
    assert loglog_slope(sizes, [1e-3 + 1e-7 * n for n in sizes]) < 1.0


def test_noise_is_averaged():
    rng = np.random.default_rng(0)
    sizes = np.array([4096, 9216, 16384, 36864, 65536] * 4)
    times = 1e-7 * sizes * np.exp(rng.normal(scale=0.05, size=sizes.shape))
    assert loglog_slope(sizes, times) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("sizes, times, match", [
    ([1, 2], [1.0], "same length"),
    ([4, 4], [1.0, 2.0], "two distinct"),
    ([1, 2], [0.0, 1.0], "times"),
    ([-1, 2], [1.0, 1.0], "sizes"),
    ([1, 2], [float("nan"), 1.0], "times"),
])
def test_bad_input_names_the_argument(sizes, times, match):
    with pytest.raises(ValueError, match=match):
        loglog_slope(sizes, times)
