"""FLOPs of a traced TensorFlow function, counted from its graph.

matmul/einsum/conv FLOPs, as the paper's and the benchmark's FLOP counts: one multiply-add is 2 FLOPs, and
elementwise ops (bias adds, activations, norms, softmax) are ignored. Counted op types:

    MatMul, BatchMatMul(V2/V3)     2 * batch * M * N * K (transpose / adjoint attributes honoured, batch broadcast)
    Einsum, XlaEinsum              2 * product of the sizes of all distinct indices ('...' broadcast); one-operand
                                   einsums (transposes, reductions) count 0
    Conv2D, DepthwiseConv2dNative  2 * output elements * kh * kw * (cin / groups), resp. 2 * output elements * kh * kw
    ...BackpropInput/Filter        the gradient convs: each the same FLOPs as the forward conv it differentiates
    XlaDot(V2), XlaConv(V2)        the same multiply-adds, read from their dimension numbers

Nested function bodies (PartitionedCall, StatefulPartitionedCall, If, Case, While: the graph's library functions)
are walked too. Only one branch of an If / Case runs, so the largest branch is counted; a While body is counted
once (its trip count is not static) and the result says how many were. Keras 3 layers traced inside a tf.function
are inlined, so a model's forward and its GradientTape gradient are plain ops of the outer graph.

Every counted op needs fully static shapes: trace with concrete input shapes (a batch of 1 for per-image FLOPs).
"""

import collections
import math
import re

import tensorflow as tf

_BRANCH_OPS = ("If", "StatelessIf", "Case", "StatelessCase")  # one branch runs: count the largest
_LOOP_OPS = ("While", "StatelessWhile")  # body counted once


def count_flops(fn, *args, **kwargs):
    """FLOPs of fn(*args, **kwargs): {"total": int, "by_type": {op type: int}, "while_loops": int}.

    fn is a tf.Graph, a ConcreteFunction (no args), a tf.function or a Python callable (traced with
    tf.function); args are tensors or tf.TensorSpecs of static shape. "while_loops" counts the While bodies
    that were counted once.
    """
    if isinstance(fn, tf.Graph):
        graph = fn
    elif hasattr(fn, "graph"):  # a ConcreteFunction
        graph = fn.graph
    else:
        if not hasattr(fn, "get_concrete_function"):
            fn = tf.function(fn)
        graph = fn.get_concrete_function(*args, **kwargs).graph
    by_type, loops = _graph_flops(graph, [graph])
    by_type = {k: v for k, v in sorted(by_type.items()) if v}
    return {"total": sum(by_type.values()), "by_type": by_type, "while_loops": loops}


def _graph_flops(graph, scopes):
    """(Counter of FLOPs per op type, While bodies counted) of one graph; scopes: graphs to look functions up in."""
    totals, loops = collections.Counter(), 0
    for op in graph.get_operations():
        counter = _COUNTERS.get(op.type)
        if counter is not None:
            totals[op.type] += counter(op)
        bodies = [_function_graph(name, scopes) for name in _function_names(op)]
        if not bodies:
            continue
        results = [_graph_flops(body, scopes + [body]) for body in bodies]
        if op.type in _BRANCH_OPS:
            results = [max(results, key=lambda r: sum(r[0].values()))]
        loops += op.type in _LOOP_OPS
        for counts, inner_loops in results:
            totals.update(counts)
            loops += inner_loops
    return totals, loops


def _function_names(op):
    """Names of the functions an op calls (func and list(func) attributes), in attribute order."""
    names = []
    for _, value in sorted(op.node_def.attr.items()):
        if value.HasField("func"):
            names.append(value.func.name)
        elif value.HasField("list"):
            names.extend(f.name for f in value.list.func)
    return names


def _function_graph(name, scopes):
    for graph in reversed(scopes):  # innermost first; nested bodies often live in an outer graph's library
        function = graph._get_function(name)  # no public lookup of a graph's library functions by name
        if function is not None and hasattr(function, "graph"):
            return function.graph
    raise ValueError(f"count_flops: function {name!r} is not in the graph's library")


def _dims(op, tensor):
    """Static shape of one of op's tensors as a list of ints; ValueError naming the op if any is unknown."""
    shape = tensor.shape
    if shape.rank is None or None in shape.as_list():
        raise ValueError(
            f"count_flops: {op.type} op {op.name!r} has a tensor of unknown shape {shape}; "
            "trace with fully static input shapes"
        )
    return shape.as_list()


def _matmul(op):
    a, b = _dims(op, op.inputs[0]), _dims(op, op.inputs[1])
    m, k = (a[1], a[0]) if op.get_attr("transpose_a") else (a[0], a[1])
    n = b[0] if op.get_attr("transpose_b") else b[1]
    return 2 * m * n * k


def _batch_matmul(op):
    a, b = _dims(op, op.inputs[0]), _dims(op, op.inputs[1])
    m, k = (a[-1], a[-2]) if op.get_attr("adj_x") else (a[-2], a[-1])
    n = b[-2] if op.get_attr("adj_y") else b[-1]
    batch = math.prod(_broadcast(a[:-2], b[:-2]))
    return 2 * batch * m * n * k


def _broadcast(*shapes):
    """Broadcast shape of right-aligned shapes (sizes of 1 give way to the other operand's)."""
    rank = max(len(s) for s in shapes)
    padded = [[1] * (rank - len(s)) + list(s) for s in shapes]
    return [max(sizes) for sizes in zip(*padded)]


def _einsum(op):
    if len(op.inputs) < 2:
        return 0
    equation = op.get_attr("equation")
    equation = equation.decode() if isinstance(equation, bytes) else equation
    inputs = re.sub(r"\s", "", equation).split("->")[0].split(",")
    sizes, ellipses = {}, []
    for subscripts, tensor in zip(inputs, op.inputs):
        dims = _dims(op, tensor)
        letters = subscripts.replace("...", "")
        if "..." in subscripts:
            start = subscripts.index("...")
            ellipses.append(dims[start:start + len(dims) - len(letters)])
            dims = dims[:start] + dims[start + len(dims) - len(letters):]
        for letter, size in zip(letters, dims):
            sizes[letter] = max(sizes.get(letter, 1), size)
    return 2 * math.prod(sizes.values()) * math.prod(_broadcast(*ellipses) if ellipses else [])


def _conv(filter_index, output_index, depthwise=False):
    """Counter of a conv or conv gradient: 2 * forward-output elements * multiply-adds per output element.

    Conv2D filters are [kh, kw, cin / groups, cout]: kh * kw * cin / groups multiply-adds per output element.
    Depthwise filters are [kh, kw, cin, multiplier]: kh * kw per output element. Index -1 is the op's output.
    """
    def count(op):
        def tensor(i):
            return op.outputs[0] if i == -1 else op.inputs[i]
        kernel = _dims(op, tensor(filter_index))
        per_output = math.prod(kernel[:-2] if depthwise else kernel[:-1])
        return 2 * math.prod(_dims(op, tensor(output_index))) * per_output
    return count


def _xla_dot(op):
    from tensorflow.compiler.xla import xla_data_pb2  # only needed when XLA ops appear
    numbers = xla_data_pb2.DotDimensionNumbers.FromString(op.get_attr("dimension_numbers"))
    lhs = _dims(op, op.inputs[0])
    contracted = math.prod(lhs[i] for i in numbers.lhs_contracting_dimensions)
    return 2 * math.prod(_dims(op, op.outputs[0])) * contracted


def _xla_conv(op):
    """XlaConv's output shape is not inferred: its spatial size comes from the window inputs."""
    from tensorflow.compiler.xla import xla_data_pb2
    numbers = xla_data_pb2.ConvolutionDimensionNumbers.FromString(op.get_attr("dimension_numbers"))
    lhs, kernel = _dims(op, op.inputs[0]), _dims(op, op.inputs[1])
    window = [tf.get_static_value(t) for t in op.inputs[2:6]]  # strides, padding, lhs / rhs dilation
    if any(w is None for w in window):
        raise ValueError(f"count_flops: {op.type} op {op.name!r} has a non-constant window")
    strides, padding, lhs_dilation, rhs_dilation = window
    outputs = lhs[numbers.input_batch_dimension] * kernel[numbers.kernel_output_feature_dimension]
    for i, (a, b) in enumerate(zip(numbers.input_spatial_dimensions, numbers.kernel_spatial_dimensions)):
        size = (lhs[a] - 1) * lhs_dilation[i] + 1 + padding[i][0] + padding[i][1]
        outputs *= (size - (kernel[b] - 1) * rhs_dilation[i] - 1) // strides[i] + 1
    return 2 * outputs * math.prod(kernel) // kernel[numbers.kernel_output_feature_dimension]


_COUNTERS = {
    "MatMul": _matmul,
    "BatchMatMul": _batch_matmul,
    "BatchMatMulV2": _batch_matmul,
    "BatchMatMulV3": _batch_matmul,
    "Einsum": _einsum,
    "XlaEinsum": _einsum,
    "Conv2D": _conv(filter_index=1, output_index=-1),
    "Conv2DBackpropInput": _conv(filter_index=1, output_index=2),  # (input_sizes, filter, out_backprop)
    "Conv2DBackpropFilter": _conv(filter_index=-1, output_index=2),  # (input, filter_sizes, out_backprop)
    "DepthwiseConv2dNative": _conv(filter_index=1, output_index=-1, depthwise=True),
    "DepthwiseConv2dNativeBackpropInput": _conv(filter_index=1, output_index=2, depthwise=True),
    "DepthwiseConv2dNativeBackpropFilter": _conv(filter_index=-1, output_index=2, depthwise=True),
    "XlaDot": _xla_dot,
    "XlaDotV2": _xla_dot,
    "XlaConv": _xla_conv,
    "XlaConvV2": _xla_conv,
}
