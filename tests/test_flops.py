"""hit.bench.flops against hand-computed multiply-add counts (2 FLOPs each)."""

import keras
import pytest
import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla
from tensorflow.compiler.xla import xla_data_pb2

from hit.bench.flops import count_flops


def test_dense_layer():
    dense = keras.layers.Dense(8)
    dense.build((3, 5))
    assert count_flops(lambda x: dense(x), tf.TensorSpec([3, 5])) == {
        "total": 2 * 3 * 5 * 8, "by_type": {"MatMul": 2 * 3 * 5 * 8}, "while_loops": 0}


def test_matmul_transposes_and_batch_broadcast():
    def fn(a, b, c, d):
        return tf.matmul(a, b, transpose_a=True, transpose_b=True), tf.matmul(c, d, adjoint_a=True)

    specs = [tf.TensorSpec(s) for s in ([5, 3], [7, 5], [4, 1, 6, 3], [2, 6, 9])]
    flops = count_flops(fn, *specs)["by_type"]
    assert flops["MatMul"] == 2 * 3 * 7 * 5
    assert flops["BatchMatMulV2"] == 2 * (4 * 2) * 3 * 9 * 6


def test_einsum_and_ellipsis():
    q, k = tf.TensorSpec([2, 3, 4, 5]), tf.TensorSpec([2, 7, 4, 5])
    assert count_flops(lambda q, k: tf.einsum("bqhd,bkhd->bhqk", q, k), q, k)["total"] == 2 * 2 * 3 * 4 * 5 * 7
    x, w = tf.TensorSpec([2, 3, 4, 5]), tf.TensorSpec([5, 6])
    assert count_flops(lambda x, w: tf.einsum("...ij,jk->...ik", x, w), x, w)["total"] == 2 * 2 * 3 * 4 * 5 * 6


def _conv_and_gradient(conv, shape):
    x = tf.random.normal(shape)
    conv.build(shape)
    forward = count_flops(lambda x: conv(x), x)

    def gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(conv(x))
        return tape.gradient(y, [x, conv.kernel])

    return forward, count_flops(gradient, x)


def test_conv2d_forward_and_gradient():
    forward, backward = _conv_and_gradient(keras.layers.Conv2D(8, 3, strides=2, padding="same"), [2, 10, 10, 4])
    expected = 2 * (2 * 5 * 5 * 8) * (3 * 3 * 4)
    assert forward["by_type"] == {"Conv2D": expected}
    assert backward["by_type"] == {"Conv2D": expected, "Conv2DBackpropInput": expected,
                                   "Conv2DBackpropFilter": expected}
    assert backward["total"] == 3 * forward["total"]


def test_grouped_conv_in_a_nested_function():
    """Keras runs a grouped conv as a nested jit-compiled tf.function: its body and gradient are library
    functions called through (Stateful)PartitionedCall."""
    forward, backward = _conv_and_gradient(keras.layers.Conv2D(6, 3, groups=3), [2, 6, 6, 3])
    expected = 2 * (2 * 4 * 4 * 6) * (3 * 3 * 1)
    assert forward["total"] == expected
    assert backward["by_type"] == {"Conv2D": expected, "Conv2DBackpropInput": expected,
                                   "Conv2DBackpropFilter": expected}


def test_depthwise_conv_and_gradient():
    forward, backward = _conv_and_gradient(keras.layers.DepthwiseConv2D(3, depth_multiplier=2), [1, 7, 7, 4])
    expected = 2 * (1 * 5 * 5 * 8) * (3 * 3)
    assert forward["total"] == expected
    assert backward["total"] == 3 * expected


def test_tiny_keras_model_inside_tf_function():
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(10),
    ])
    fn = tf.function(lambda x: model(x, training=False))
    flops = count_flops(fn.get_concrete_function(tf.TensorSpec([2, 8, 8, 3])))
    conv = 2 * (2 * 8 * 8 * 4) * (3 * 3 * 3)
    dense = 2 * 2 * 256 * 16 + 2 * 2 * 16 * 10
    assert flops["by_type"] == {"Conv2D": conv, "MatMul": dense}
    assert flops["total"] == conv + dense


def test_xla_ops():
    numbers = xla_data_pb2.DotDimensionNumbers(lhs_contracting_dimensions=[2], rhs_contracting_dimensions=[1],
                                               lhs_batch_dimensions=[0], rhs_batch_dimensions=[0])
    a, b = tf.TensorSpec([2, 3, 4]), tf.TensorSpec([2, 4, 5])
    assert count_flops(lambda a, b: xla.dot_general(a, b, numbers), a, b)["by_type"] == {"XlaDot": 2 * 2 * 3 * 4 * 5}
    a, b = tf.TensorSpec([3, 4]), tf.TensorSpec([4, 5])
    assert count_flops(lambda a, b: xla.einsum(a, b, "ab,bc->ac"), a, b)["by_type"] == {"XlaEinsum": 2 * 3 * 4 * 5}
    conv_numbers = xla_data_pb2.ConvolutionDimensionNumbers(
        input_batch_dimension=0, input_feature_dimension=3, input_spatial_dimensions=[1, 2],
        kernel_input_feature_dimension=2, kernel_output_feature_dimension=3, kernel_spatial_dimensions=[0, 1],
        output_batch_dimension=0, output_feature_dimension=3, output_spatial_dimensions=[1, 2])

    def conv(x, k):
        return xla.conv(x, k, window_strides=[2, 1], padding=[(1, 1), (0, 0)], lhs_dilation=[1, 1],
                        rhs_dilation=[1, 2], dimension_numbers=conv_numbers)

    x, k = tf.TensorSpec([2, 6, 7, 3]), tf.TensorSpec([3, 3, 3, 5])
    # rows: (6 + 2 - 3) // 2 + 1 = 3; columns: dilated kernel 5 -> 7 - 5 + 1 = 3
    assert count_flops(conv, x, k)["by_type"] == {"XlaConv": 2 * (2 * 3 * 3 * 5) * (3 * 3 * 3)}


def test_control_flow_counts_the_largest_branch_and_one_loop_body():
    w = tf.ones([4, 4])

    def fn(x, flag):
        y = tf.cond(flag, lambda: tf.matmul(tf.matmul(x, w), w), lambda: tf.matmul(x, w))
        return tf.while_loop(lambda i, y: i < 3, lambda i, y: (i + 1, tf.matmul(y, w)), [0, y])

    flops = count_flops(fn, tf.TensorSpec([2, 4]), tf.TensorSpec([], tf.bool))
    one = 2 * 2 * 4 * 4
    assert flops == {"total": 3 * one, "by_type": {"MatMul": 3 * one}, "while_loops": 1}


def test_unknown_dimension_names_the_op():
    with pytest.raises(ValueError, match="MatMul op .* unknown shape"):
        count_flops(lambda x: tf.matmul(x, tf.ones([5, 2])), tf.TensorSpec([None, 5]))
