"""The Keras scaling backend's memory figure, with and without TensorFlow's CPU
allocator statistics (kept only by the BFC allocator: oneDNN's, which TensorFlow
turns on by default only on some CPUs, or TF_CPU_ALLOCATOR_USE_BFC=true, which the
backend asks for). Each case runs in its own process: both settings are read when
TensorFlow loads."""

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
                      "memory": backend.info()["memory"],
                      "bfc": backend.info()["TF_CPU_ALLOCATOR_USE_BFC"]}))
""")


def _run(onednn: str, bfc: str | None) -> dict:
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, KERAS_BACKEND="tensorflow",
               TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CPU_ALLOCATOR_USE_BFC", None)
    if bfc is not None:
        env["TF_CPU_ALLOCATOR_USE_BFC"] = bfc
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc high-water mark")
@pytest.mark.parametrize("onednn", ["0", "1"])
def test_the_peak_sees_the_result_with_or_without_allocator_statistics(onednn):
    """oneDNN off and the BFC allocator refused: no allocator statistics, the process
    high-water is used (the whole Keras section failed on AMD EPYC before:
    `Cannot reset memory stats`)."""
    row = _run(onednn, "false")
    assert row["stats"] is (onednn == "1"), row
    assert row["memory"].startswith("TF allocator") is (onednn == "1"), row
    assert 64 * 2**20 <= row["peak"] < 1024 * 2**20, row


def test_the_backend_asks_for_the_bfc_allocator_and_its_peak_is_the_result():
    """Left unset, the backend sets TF_CPU_ALLOCATOR_USE_BFC=true before TensorFlow
    loads: allocator statistics without oneDNN, and the peak of one 64 MiB result is
    64 MiB exactly (the process high-water also counts heap slack)."""
    row = _run("0", None)
    assert row["bfc"] == "true", row
    assert row["stats"] is True and row["memory"] == "TF allocator peak", row
    assert row["peak"] == 64 * 2**20, row
