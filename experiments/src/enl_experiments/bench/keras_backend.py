"""Keras 3 (TensorFlow backend) backend of the scaling section: NHWC blocks,
``keras.ops.dot_product_attention``, ``tf.matmul``.

Every call is a ``tf.function`` (graph mode, as a Keras model runs), with an
XLA variant of ENL when ``keras_xla``. Imports TensorFlow only; run in its own
process with ``KERAS_BACKEND=tensorflow`` set before Keras is imported.
"""

from __future__ import annotations

import gc
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from enl_experiments.bench import measure  # noqa: E402  (imports no framework)

measure.keep_tf_cpu_allocator_stats()  # read when TensorFlow loads

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from enl_core.cost import NL_KIND_MODES  # noqa: E402
from enl_experiments.bench.cases import Case, available_implementations  # noqa: E402
from enl_experiments.bench.config import BenchConfig  # noqa: E402


class KerasBackend:
    """See :mod:`enl_experiments.bench.scaling` for the protocol."""

    name = "keras"

    def __init__(self, config: BenchConfig):
        if keras.backend.backend() != "tensorflow":
            raise ValueError(f"the Keras bench needs KERAS_BACKEND=tensorflow, received "
                             f"{keras.backend.backend()!r}")
        self.config = config
        gpus = tf.config.list_physical_devices("GPU")
        if config.device == "cuda" and not gpus:
            raise ValueError("`device` is 'cuda' but TensorFlow sees no GPU")
        self.gpu = bool(gpus) and config.device != "cpu"
        self.device = "/GPU:0" if self.gpu else "/CPU:0"
        # keras.ops.dot_product_attention on the TF backend is einsum + softmax:
        # the N x N scores are materialised.
        self.flash_attention = False
        tf.random.set_seed(0)
        # TF's own allocator peak where it keeps one, else the process high-water.
        self.allocator_stats = measure.tf_allocator_stats(
            tf, "GPU:0" if self.gpu else "CPU:0")

    # -- environment -----------------------------------------------------
    def info(self) -> dict:
        intra = tf.config.threading.get_intra_op_parallelism_threads()
        info = {"tensorflow": tf.__version__, "keras": keras.__version__,
                "keras_backend": keras.backend.backend(), "device": self.device,
                # 0 means TensorFlow's default: one thread per logical core.
                "intra_op_threads": intra or os.cpu_count(),
                "intra_op_setting": intra,
                "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
                "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
                measure.TF_CPU_BFC: os.environ.get(measure.TF_CPU_BFC, "unset"),
                # What the variable chose, whatever BenchConfig.reuse_heap says: the
                # bench's cli sets it from reuse_heap, a direct caller may not have.
                "heap": ("BFC: freed memory reused" if self.allocator_stats and not self.gpu
                         else "GPU allocator" if self.gpu else "the allocator's default"),
                "memory": ("TF allocator peak" if self.allocator_stats else
                           "process resident high-water (this TensorFlow keeps no CPU "
                           "allocator statistics: neither oneDNN nor "
                           f"{measure.TF_CPU_BFC}=true)")}
        if self.gpu:
            details = tf.config.experimental.get_device_details(
                tf.config.list_physical_devices("GPU")[0])
            info.update(gpu=details.get("device_name", "GPU:0"))
        return info

    def sync(self) -> None:
        if self.gpu:
            tf.test.experimental.sync_devices()

    def memory_limit_bytes(self) -> int | None:
        return None  # TF does not report a GPU's total memory; the config's limit is used

    def free_bytes(self) -> int | None:
        if self.gpu:
            return None
        import psutil

        return psutil.virtual_memory().available

    def peak_above(self, call) -> int | None:
        """Allocator peak above the current allocation, CPU or GPU alike.

        The BFC allocator (:func:`measure.keep_tf_cpu_allocator_stats`, or
        oneDNN's) keeps freed memory, so the process high-water would hide a
        repeated call's peak; its own statistics do not. TensorFlow's plain CPU
        allocator keeps no statistics but returns memory to the C heap, so the
        process high-water (reset before the call, as the torch backend does)
        measures it.
        """
        if not self.allocator_stats:
            return measure.host_peak_above(call, self.sync)
        device = "GPU:0" if self.gpu else "CPU:0"
        self.sync()
        tf.config.experimental.reset_memory_stats(device)
        before = tf.config.experimental.get_memory_info(device)["current"]
        result = call()
        self.sync()
        peak = tf.config.experimental.get_memory_info(device)["peak"] - before
        del result
        return peak

    def release(self) -> None:
        keras.backend.clear_session()
        gc.collect()

    def profile(self, side: int, backward: bool) -> dict:
        from enl_experiments.bench import profiling

        return profiling.tf_profile(side, backward, self.config.channels,
                                    self.config.inter_channels)

    # -- calls -----------------------------------------------------------
    def _randn(self, *shape) -> tf.Tensor:
        with tf.device(self.device):
            return tf.random.normal(shape, dtype=tf.float32)

    def matmul(self, m: int, k: int, n: int):
        a, b = self._randn(m, k), self._randn(k, n)
        product = tf.function(tf.matmul)
        return lambda: product(a, b)

    def implementations(self) -> dict[str, str | None]:
        """Implementation -> None when it can run, else why not."""
        return available_implementations("enl_keras", "keras_dpa",
                                         "enl_xla" if self.config.keras_xla else None)

    def _layer(self, implementation: str):
        import enl_keras

        inter = self.config.inter_channels
        # zero_init=False: a trained block has a non-zero `out`; the work is the same.
        if implementation in ("enl", "enl_xla"):
            return enl_keras.ENL(inter_channels=inter, zero_init=False)
        return enl_keras.NonLocal(mode=NL_KIND_MODES[implementation], inter_channels=inter,
                                  zero_init=False)

    def block(self, case: Case):
        """A zero-argument call running one forward or forward+backward ``tf.function``."""
        batch, side = self.config.batch, case.side
        backward = case.mode == "forward_backward"
        jit = case.implementation == "enl_xla"
        if case.implementation == "keras_dpa":
            shape = (batch, side * side, 1, self.config.inter_channels)  # B, N, heads, C'
            inputs = [self._randn(*shape) for _ in range(3)]
            function, variables = (lambda q, k, v: keras.ops.dot_product_attention(q, k, v)), []
        else:
            layer = self._layer(case.implementation)
            inputs = [self._randn(batch, side, side, self.config.channels)]
            with tf.device(self.device):
                layer(inputs[0])  # builds the weights
            function, variables = (lambda x: layer(x, training=backward)), layer.trainable_weights
        if not backward:
            compiled = tf.function(function, jit_compile=jit)
            return lambda: compiled(*inputs)
        with tf.device(self.device):
            upstream = self._randn(*function(*inputs).shape)

        @tf.function(jit_compile=jit)
        def step(*tensors):
            with tf.GradientTape() as tape:
                tape.watch(tensors)
                # <y, upstream> has gradient `upstream`: a full backward pass.
                loss = tf.reduce_sum(function(*tensors) * upstream)
            return tape.gradient(loss, list(tensors) + list(variables))

        return lambda: step(*inputs)
