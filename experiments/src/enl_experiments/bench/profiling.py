"""Where ENL's time goes: an op-level profile of one ENL call per framework.

PyTorch: ``torch.profiler`` on the ``enl_torch.ENL`` module. Keras/TF: the
``enl_keras.ops.enl`` graph (the function the layer calls) run in a
TensorFlow session with a full trace (``RunMetadata`` step stats), since
TensorFlow 2's own profiler writes traces only its TensorBoard plugin reads.
Both return the ops that took the most time (self time, summed per op type),
so a report can say which kernels keep ENL from the sgemm limit.
"""

from __future__ import annotations

import numpy as np

from enl_core.validation import DEFAULT_DCT_SIZE

TOP = 12


def _top(totals: dict[str, list[float]], total_s: float) -> list[dict]:
    rows = sorted(((name, sum(times), len(times)) for name, times in totals.items()),
                  key=lambda row: -row[1])
    return [{"op": name, "self_s": seconds, "share": seconds / total_s if total_s else 0.0,
             "calls": calls} for name, seconds, calls in rows[:TOP]]


def torch_profile(side: int, backward: bool, channels: int, inter_channels: int,
                  device: str = "cpu", repeats: int = 3) -> dict:
    """Self time per aten op of ``repeats`` ENL calls on a (1, C, side, side) input."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    import enl_torch

    module = enl_torch.ENL(channels, inter_channels=inter_channels, zero_init=False).to(device)
    x = torch.randn(1, channels, side, side, device=device, requires_grad=backward)
    upstream = torch.randn_like(x)

    def call():
        if backward:
            module(x).backward(upstream)
        else:
            with torch.no_grad():
                module(x)

    call()  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as profiler:
        for _ in range(repeats):
            call()
        if device == "cuda":
            torch.cuda.synchronize()
    totals: dict[str, list[float]] = {}
    for event in profiler.key_averages():
        self_us = (event.self_device_time_total if device == "cuda"
                   else event.self_cpu_time_total)
        if self_us > 0:
            totals.setdefault(event.key, []).extend([self_us / 1e6 / event.count] * event.count)
    total_s = sum(sum(times) for times in totals.values())
    return {"framework": "torch", "side": side, "backward": backward, "repeats": repeats,
            "total_self_s": total_s, "top": _top(totals, total_s)}


def tf_profile(side: int, backward: bool, channels: int, inter_channels: int,
               repeats: int = 3) -> dict:
    """Time per TensorFlow op type of ``repeats`` runs of the ENL graph (Keras ops)."""
    import tensorflow as tf

    from enl_keras import ops as enl_ops

    rng = np.random.default_rng(0)
    graph = tf.Graph()
    values = [rng.normal(size=shape).astype("float32") * 0.05
              for shape in ((1, side, side, channels), (channels, 3 * inter_channels),
                            (3 * inter_channels,), (inter_channels, channels), (channels,))]
    with graph.as_default():
        # Placeholders, not constants: Grappler would fold a constant graph away.
        inputs = [tf.compat.v1.placeholder(tf.float32, value.shape) for value in values]
        dct_scale = tf.ones(DEFAULT_DCT_SIZE, tf.float32)  # the paper's 9 x 9, d = 1
        y = enl_ops.enl(*inputs, dct_scale=dct_scale)
        fetch = tf.gradients(tf.reduce_sum(y * inputs[0]), inputs) if backward else y
    feed = dict(zip(inputs, values, strict=True))
    totals: dict[str, list[float]] = {}
    options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
    with tf.compat.v1.Session(graph=graph) as session:
        session.run(fetch, feed)  # warm-up
        for _ in range(repeats):
            metadata = tf.compat.v1.RunMetadata()
            session.run(fetch, feed, options=options, run_metadata=metadata)
            for device in metadata.step_stats.dev_stats:
                for node in device.node_stats:
                    # timeline_label: "name = OpType(inputs)"; keep the op type.
                    label = node.timeline_label
                    kind = label.split("=", 1)[1].split("(")[0].strip() if "=" in label \
                        else node.node_name
                    totals.setdefault(kind, []).append(node.op_end_rel_micros / 1e6)
    total_s = sum(sum(times) for times in totals.values())
    return {"framework": "keras", "side": side, "backward": backward, "repeats": repeats,
            "total_self_s": total_s, "top": _top(totals, total_s)}
