"""FLOPs of a TensorFlow graph from TensorFlow's own profiler.

``tf.compat.v1.profiler`` counts an op only when a "flops" statistic is
registered for its type, and TensorFlow 2.20 gets two of them wrong for the
blocks measured here:

- ``Einsum`` has no statistic, so a two-operand einsum (``keras.ops.einsum``
  emits one) counts as zero. The bench registers one with the rule the
  profiler applies to ``MatMul``: two FLOPs per multiply-add, the
  multiply-adds being the product of the sizes of all distinct indices.
- ``BatchMatMulV2`` / ``V3`` read the attribute ``transpose_a``, which those ops
  do not have (theirs is ``adj_x``), so ``A^T B`` (``phi^T g``) is counted with
  the wrong inner size. The bench replaces that statistic with one that reads
  ``adj_x``.

Everything else is the profiler's own count.
"""

from __future__ import annotations

import math


def einsum_macs(equation: str, shapes: list[list[int]]) -> int:
    """Multiply-adds of an explicit two-operand einsum.

    Args:
        equation: e.g. ``"bnc,bnd->bcd"`` (no ellipsis).
        shapes: the two operands' fully known shapes.

    Raises:
        ValueError: not two operands, an ellipsis, or shapes that do not match.

    Example:
        >>> einsum_macs("bnc,bnd->bcd", [[2, 5, 3], [2, 5, 4]])
        120
    """
    inputs = equation.replace(" ", "").split("->")[0].split(",")
    if len(inputs) != 2 or "." in equation:
        raise ValueError(f"`equation` must be an explicit two-operand einsum, received "
                         f"{equation!r}")
    sizes: dict[str, int] = {}
    for labels, shape in zip(inputs, shapes, strict=True):
        if len(labels) != len(shape):
            raise ValueError(f"einsum operand {labels!r} does not match shape {shape}")
        for label, size in zip(labels, shape, strict=True):
            if sizes.setdefault(label, size) != size:
                raise ValueError(f"einsum index {label!r} has sizes {sizes[label]} and {size}")
    return math.prod(sizes.values())


def register_einsum_flops() -> None:
    """Registers the Einsum statistic once per process (no-op when one exists)."""
    from tensorflow.python.framework import graph_util, ops

    def _einsum_flops(graph, node):
        inputs = [name for name in node.input if not name.startswith("^")]
        if len(inputs) != 2:
            return ops.OpStats("flops", 0)  # n-ary einsums do not occur in the blocks
        shapes = []
        for name in inputs:
            shape = graph_util.tensor_shape_from_node_def_name(graph, name)
            shape.assert_is_fully_defined()
            shapes.append(shape.as_list())
        equation = node.attr["equation"].s.decode()
        return ops.OpStats("flops", 2 * einsum_macs(equation, shapes))

    try:
        ops.RegisterStatistics("Einsum", "flops")(_einsum_flops)
    except KeyError:
        pass  # registered already (by us or by TensorFlow)


def _batch_matmul_flops(graph, node):
    """Two FLOPs per multiply-add; the inner size honours ``adj_x`` (BatchMatMulV2/V3)."""
    from tensorflow.python.framework import graph_util, ops

    a_shape = graph_util.tensor_shape_from_node_def_name(graph, node.input[0])
    a_shape.assert_is_fully_defined()
    adjoint = node.attr["adj_x"].b or node.attr["transpose_a"].b
    inner = int(a_shape[-2] if adjoint else a_shape[-1])
    output = graph_util.tensor_shape_from_node_def_name(graph, node.name)
    output.assert_is_fully_defined()
    return ops.OpStats("flops", 2 * inner * math.prod(output.as_list()))


def fix_batch_matmul_flops() -> None:
    """Replaces TensorFlow's BatchMatMulV2/V3 statistic by :func:`_batch_matmul_flops`."""
    from tensorflow.python.framework import ops

    # The registry has no public "replace"; drop the faulty entry, then register.
    entries = ops._stats_registry._registry  # noqa: SLF001 - see the module docstring
    for op_type in ("BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"):
        key = f"{op_type},flops"
        if getattr(entries.get(key, {}).get("type"), "__name__", "") == "_batch_matmul_flops":
            continue
        entries.pop(key, None)
        ops.RegisterStatistics(op_type, "flops")(_batch_matmul_flops)


def graph_flops(graph) -> int:
    """Total float operations TensorFlow's profiler counts in ``graph``."""
    from tensorflow.python.profiler import model_analyzer, option_builder

    register_einsum_flops()
    fix_batch_matmul_flops()
    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return int(model_analyzer.profile(graph, options=options).total_float_ops)


def graph_flops_by_op(graph, top: int = 8) -> tuple[int, dict[str, int]]:
    """The profiler's total FLOPs and its FLOPs per op type, in one profile.

    Returns:
        ``(total, by_op)``: ``by_op`` holds the largest ``top`` op types and
        the rest summed as "other", so its values add up to ``total``.
    """
    from tensorflow.python.profiler import model_analyzer, option_builder

    register_einsum_flops()
    fix_batch_matmul_flops()
    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = model_analyzer.profile(graph, cmd="op", options=options)
    # The "op" view chains op types as nested children; each node's own count
    # is `float_ops`.
    totals: dict[str, int] = {}
    stack = list(profile.children)
    while stack:
        node = stack.pop()
        totals[node.name] = totals.get(node.name, 0) + int(node.float_ops)
        stack.extend(node.children)
    counts = sorted(((name, flops) for name, flops in totals.items() if flops),
                    key=lambda item: -item[1])
    result = dict(counts[:top])
    rest = sum(flops for _, flops in counts[top:])
    if rest:
        result["other"] = rest
    return int(profile.total_float_ops), result
