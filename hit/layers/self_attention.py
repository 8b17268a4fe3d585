"""Global multi-head self-attention of GAT's generator and discriminator blocks (official GAT
models/custom_layers.py `Attention`).

    q, k, v = split(qkv(x))                  one Linear C -> 3C with bias; [.., 3, heads, head_dim] order
    q, k = RMSNorm(q), RMSNorm(k)            QK-norm over head_dim, with a learnable scale, eps = float32 eps
    q, k = RoPE(q), RoPE(k)                  2-D rotary embedding after the QK-norm (hit.layers.rope), optional
    out = proj(softmax(q k^T / sqrt(head_dim)) v)    proj: Linear C -> C with bias

Linear layers are xavier-uniform (Keras' glorot_uniform) with zero biases, as the official initialize_weights.
The softmax runs in float32 under a mixed-precision policy.
"""

import keras
import tensorflow as tf

from hit.layers.normalization import QK_NORM_EPSILON, rms_norm_layer


class SelfAttention(keras.layers.Layer):
    """x [batch, tokens, width] -> [batch, tokens, width]; call(x, rope=None), rope a hit.layers.rope.Rotary2D."""

    def __init__(self, width, heads, qk_norm_epsilon=QK_NORM_EPSILON, **kwargs):
        super().__init__(**kwargs)
        if heads < 1 or width % heads:
            raise ValueError(f"{self.name}: {heads} heads do not divide width {width}")
        self.width, self.heads, self.head_dim = width, heads, width // heads
        self.qk_norm_epsilon = qk_norm_epsilon
        self.qkv = keras.layers.Dense(3 * width, name="qkv")
        self.q_norm = rms_norm_layer("q_norm", qk_norm_epsilon)
        self.k_norm = rms_norm_layer("k_norm", qk_norm_epsilon)
        self.proj = keras.layers.Dense(width, name="proj")

    def build(self, input_shape):
        self.qkv.build(input_shape)
        self.q_norm.build((None, None, self.heads, self.head_dim))
        self.k_norm.build((None, None, self.heads, self.head_dim))
        self.proj.build(input_shape)

    def call(self, x, rope=None):
        if len(x.shape) != 3 or x.shape[-1] != self.width:
            raise ValueError(f"{self.name}: expected [batch, tokens, {self.width}], got {x.shape}")
        tokens = x.shape[1]
        qkv = tf.reshape(self.qkv(x), (-1, tokens, 3, self.heads, self.head_dim))
        q, k, v = self.q_norm(qkv[:, :, 0]), self.k_norm(qkv[:, :, 1]), qkv[:, :, 2]
        if rope is not None:
            q, k = rope(q), rope(k)
        logits = tf.einsum("bqhd,bkhd->bhqk", q, k) * tf.cast(self.head_dim ** -0.5, q.dtype)
        weights = tf.cast(tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1), v.dtype)
        out = tf.einsum("bhqk,bkhd->bqhd", weights, v)
        return self.proj(tf.reshape(out, (-1, tokens, self.width)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "width": self.width, "heads": self.heads,
                "qk_norm_epsilon": self.qk_norm_epsilon}
