"""Vector quantisation of VQ-HiT's encoder grid (HiT paper Sec. 4.3 and A.5; VQ-VAE, van den Oord et al. 2017;
VQGAN, Esser et al. 2021, the paper's [16], where the paper is silent).

Each D-wide vector z of the grid is replaced by its nearest codebook row e_k (L2). Gradients pass straight
through to z (z_q = z + sg(e_k - z)). The losses, as VQ-VAE's eq. 3:
    codebook     mean((sg(z) - e_k)^2)        moves the codes towards the encoder outputs
    commitment   beta * mean((z - sg(e_k))^2) keeps the encoder near its codes, beta = 0.25 (VQGAN)
(means over every element of the grid). VQGAN's legacy quantiser swaps beta onto the codebook term; we follow
the VQ-VAE definition that VQGAN's paper writes. The codebook starts U(-1/K, 1/K) as VQGAN's.
"""

import keras
import tensorflow as tf


class VectorQuantizer(keras.layers.Layer):
    """z [..., D] -> (z_q [..., D] with straight-through gradients, codes [...] int32, {loss name: scalar})."""

    def __init__(self, num_codes, dim, beta=0.25, **kwargs):
        super().__init__(**kwargs)
        if num_codes < 1 or dim < 1:
            raise ValueError(f"bad codebook: {num_codes} codes of width {dim} (both must be positive)")
        self.num_codes, self.dim, self.beta = num_codes, dim, beta
        self.codebook = self.add_weight(
            name="codebook", shape=(num_codes, dim),
            initializer=keras.initializers.RandomUniform(-1.0 / num_codes, 1.0 / num_codes))

    def nearest_codes(self, z):
        """Index of the nearest codebook row (squared L2) of every vector of z [..., D]: int32 [...]."""
        flat = tf.reshape(z, [-1, self.dim])
        distances = (tf.reduce_sum(flat**2, axis=1, keepdims=True) - 2.0 * tf.matmul(flat, self.codebook,
                                                                                     transpose_b=True)
                     + tf.reduce_sum(self.codebook**2, axis=1)[None])
        codes = tf.argmin(distances, axis=1, output_type=tf.int32)
        return tf.reshape(codes, tf.shape(z)[:-1])

    def lookup(self, codes):
        """Codebook rows of int codes [...]: [..., D]."""
        return tf.gather(self.codebook, codes)

    def call(self, z):
        codes = self.nearest_codes(z)
        e = self.lookup(codes)
        losses = {"codebook_loss": tf.reduce_mean((tf.stop_gradient(z) - e) ** 2),
                  "commitment_loss": self.beta * tf.reduce_mean((z - tf.stop_gradient(e)) ** 2)}
        return z + tf.stop_gradient(e - z), codes, losses

    def get_config(self):
        return {**super().get_config(), "num_codes": self.num_codes, "dim": self.dim, "beta": self.beta}


def code_counts(codes, num_codes):
    """How often each code is used in `codes` (any shape): float32 [num_codes]."""
    flat = tf.reshape(codes, [-1])
    return tf.math.unsorted_segment_sum(tf.ones_like(flat, tf.float32), flat, num_codes)  # XLA-compilable


def code_usage(counts):
    """(perplexity, fraction of unused codes) of code counts [K]: exp(entropy of the usage distribution),
    between 1 (one code) and K (all equally), and the share of codes with a zero count."""
    p = counts / tf.maximum(tf.reduce_sum(counts), 1.0)
    entropy = -tf.reduce_sum(tf.where(p > 0, p * tf.math.log(tf.where(p > 0, p, 1.0)), 0.0))
    return tf.exp(entropy), tf.reduce_mean(tf.cast(counts == 0, tf.float32))
