"""TensorFlow profiler FLOPs with the bench's Einsum / BatchMatMul statistics.

Imports TensorFlow (never torch) in this process.
"""

import pytest

from enl_experiments.bench import tf_flops


def test_einsum_macs():
    assert tf_flops.einsum_macs("bnc,bnd->bcd", [[2, 5, 3], [2, 5, 4]]) == 120
    assert tf_flops.einsum_macs("ij,jk->ik", [[7, 3], [3, 2]]) == 42
    with pytest.raises(ValueError, match="two-operand"):
        tf_flops.einsum_macs("ij->ji", [[2, 3]])
    with pytest.raises(ValueError, match="sizes"):
        tf_flops.einsum_macs("ij,jk->ik", [[2, 3], [4, 5]])


def test_profiler_counts_every_form_of_phi_transpose_g_alike():
    tf = pytest.importorskip("tensorflow")
    spec = [tf.TensorSpec([2, 5, 3]), tf.TensorSpec([2, 5, 4])]
    forms = [lambda a, b: tf.einsum("bnc,bnd->bcd", a, b),
             lambda a, b: tf.matmul(a, b, transpose_a=True),
             lambda a, b: tf.matmul(tf.transpose(a, (0, 2, 1)), b)]
    counts = [tf_flops.graph_flops(tf.function(f).get_concrete_function(*spec).graph)
              for f in forms]
    assert counts == [2 * 2 * 3 * 5 * 4] * 3


def test_profiler_counts_an_enl_block_as_the_cost_model(monkeypatch):
    """The tf_keras twin's graph, profiled, against enl_core.cost (block FLOPs within 2%)."""
    tf = pytest.importorskip("tensorflow")
    garden_layers = pytest.importorskip("enl_keras.garden.layers")
    from enl_core import cost

    height, width, channels = 24, 20, 64
    layer = garden_layers.ENL(inter_channels=32)
    concrete = tf.function(layer).get_concrete_function(
        tf.TensorSpec([1, height, width, channels]))
    counted = tf_flops.graph_flops(concrete.graph)
    model = 2 * cost.block_cost(height, width, channels, 32, kind="enl").macs
    # The profiler also counts biases, the 1/N scaling and the residual sum.
    assert counted == pytest.approx(model, rel=0.02)
    assert counted >= model


def test_flops_by_op_type_sum_to_the_total():
    tf = pytest.importorskip("tensorflow")
    function = tf.function(lambda a, b: tf.nn.relu(tf.matmul(a, b)) + 1.0)
    graph = function.get_concrete_function(tf.TensorSpec([20, 30]),
                                           tf.TensorSpec([30, 40])).graph
    total, by_op = tf_flops.graph_flops_by_op(graph)
    assert by_op == {"MatMul": 2 * 20 * 30 * 40, "AddV2": 20 * 40}
    assert sum(by_op.values()) == total == tf_flops.graph_flops(graph)
    total, by_op = tf_flops.graph_flops_by_op(graph, top=1)
    assert by_op == {"MatMul": 2 * 20 * 30 * 40, "other": 20 * 40}
