"""Feed-forward networks: HiT's two-layer MLP (Appendix A.1 eq. (1)) and GAT's SwiGLU (official GAT
models/swiglu_ffn.py `SwiGLUFFN`)."""

import keras
import tensorflow as tf

from hit.layers.initializers import trunc_normal


def gelu_exact(x):
    return keras.ops.gelu(x, approximate=False)


class MLP(keras.layers.Layer):
    """Dense(C -> ratio*C, GELU) -> Dense(ratio*C -> C), plus `residual` if given.

    The paper writes max(0, .) (ReLU) in eq. (1); the official generator passes the exact (erf) GELU,
    which we follow (hit-gan models/generators.py `Block`). Dropout is 0 in every official run and is therefore
    left out.
    """

    def __init__(self, channels, ratio=4, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.ratio = ratio
        self.hidden = keras.layers.Dense(
            channels * ratio, activation=gelu_exact, kernel_initializer=trunc_normal(), name="hidden"
        )
        self.out = keras.layers.Dense(channels, kernel_initializer=trunc_normal(), name="out")

    def call(self, x, residual=None):
        # On the tokens as one 2-D matrix: Keras' Dense on [..., C] reshapes around its MatMul, which keeps
        # TensorFlow's graph optimiser from fusing MatMul + BiasAdd + GELU into one oneDNN kernel (a third of
        # HiT-B's graph-mode time went to the separate element-wise passes). The values are the same.
        # `residual` (the block's skip connection, eq. (1)) is added on the same 2-D matrix, where MatMul + BiasAdd
        # + Add fuse too (ImageNet 128 G inference +9% in graph mode on CPU, side by side on 2026-12-01).
        y = self.out(self.hidden(tf.reshape(x, [-1, x.shape[-1]])))
        if residual is not None:
            y = tf.reshape(residual, [-1, x.shape[-1]]) + y
        return tf.reshape(y, tf.shape(x))

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "ratio": self.ratio}


def swiglu_hidden_dim(channels, mlp_ratio=4.0):
    """GAT's SwiGLU hidden width: int(2/3 * int(ratio * C)) as the official blocks compute it (official GAT
    models/generator.py `GATBlock`):
    1024, 2048, 2730, 3072 for C = 384, 768, 1024, 1152."""
    return int(2 / 3 * int(channels * mlp_ratio))


class SwiGLU(keras.layers.Layer):
    """GAT's feed-forward network (official GAT models/swiglu_ffn.py, DINOv2's SwiGLUFFN): w12: C -> 2h, split in
    halves (a, b) in that order, silu(a) * b, w3: h -> C; both Linear with bias, xavier-uniform (Keras'
    glorot_uniform) and zero biases."""

    def __init__(self, channels, hidden_dim, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.hidden_dim = channels, hidden_dim
        self.w12 = keras.layers.Dense(2 * hidden_dim, name="w12")
        self.w3 = keras.layers.Dense(channels, name="w3")

    def build(self, input_shape):
        self.w12.build(input_shape)
        self.w3.build((*input_shape[:-1], self.hidden_dim))

    def call(self, x):
        a, b = keras.ops.split(self.w12(x), 2, axis=-1)
        return self.w3(keras.ops.silu(a) * b)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "hidden_dim": self.hidden_dim}
