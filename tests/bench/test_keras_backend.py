"""The Keras scaling backend's memory figure, with and without TensorFlow's CPU
allocator statistics (kept only by oneDNN's allocator, which TensorFlow turns on
by default only on some CPUs). Each case runs in its own process: the oneDNN
setting is read when TensorFlow loads."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("tensorflow")

SCRIPT = textwrap.dedent("""
    import json
    from enl_experiments.bench.config import BenchConfig
    from enl_experiments.bench.keras_backend import KerasBackend, tf

    backend = KerasBackend(BenchConfig(device="cpu"))
    x = tf.random.normal((4096, 4096))
    build = tf.function(lambda: x * 2.0 + 1.0)  # one 64 MiB result
    build()
    peak = backend.peak_above(lambda: build().numpy())
    print(json.dumps({"stats": backend.allocator_stats, "peak": peak,
                      "memory": backend.info()["memory"]}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc high-water mark")
@pytest.mark.parametrize("onednn", ["0", "1"])
def test_the_peak_sees_the_result_with_or_without_allocator_statistics(onednn):
    """oneDNN off: no allocator statistics, the process high-water is used (the whole
    Keras section failed on AMD EPYC before: `Cannot reset memory stats`)."""
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, KERAS_BACKEND="tensorflow",
               TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["stats"] is (onednn == "1"), row
    assert row["memory"].startswith("TF allocator") is (onednn == "1"), row
    assert 64 * 2**20 <= row["peak"] < 1024 * 2**20, row
