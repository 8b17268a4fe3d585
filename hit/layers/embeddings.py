"""Learnable position embeddings and the two projections of the latent code (Alg. 1; official hit-gan
models/generators.py `HiTGenerator`)."""

import keras

from hit.layers.initializers import trunc_normal
from hit.layers.normalization import Norm


class PositionEmbedding(keras.layers.Layer):
    """x + P, P learnable with x's shape (without the batch axis), TruncatedNormal(0.02) (hit-gan models/layers.py
    `PositionEmbedding`)."""

    def build(self, input_shape):
        self.embedding = self.add_weight(
            name="embedding", shape=(1, *input_shape[1:]), initializer=trunc_normal()
        )

    def call(self, x):
        return x + self.embedding


class InitialFeatureMap(keras.layers.Layer):
    """X_0 = ReShape_{8x8}(Linear(z)) (Alg. 1): Dense(latent -> 8*8*C0), reshaped to (B, 8, 8, C0)."""

    def __init__(self, channels, size=8, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.size = size
        self.dense = keras.layers.Dense(size * size * channels, kernel_initializer=trunc_normal(), name="dense")

    def call(self, z):
        return keras.ops.reshape(self.dense(z), (-1, self.size, self.size, self.channels))

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "size": self.size}


class LatentEmbedding(keras.layers.Layer):
    """Z = norm(Linear(z) + P_Z): the latent tokens every cross-attention reads (Sec. 3.3).

    Algorithm 1 writes ReShape_{8x8}; the official code makes 16 tokens, as wide as stage 1, and normalises
    them with the generator's norm (BatchNorm) after adding P_Z. We follow the official code (hit-gan
    models/generators.py).
    The tokens are computed once and shared unchanged by all stages.
    """

    def __init__(self, num_tokens, channels, norm=Norm(), **kwargs):
        super().__init__(**kwargs)
        self.num_tokens = num_tokens
        self.channels = channels
        self.dense = keras.layers.Dense(num_tokens * channels, kernel_initializer=trunc_normal(), name="dense")
        self.position = PositionEmbedding(name="position")
        self.norm = norm.make("norm")

    def call(self, z, training=None):
        tokens = keras.ops.reshape(self.dense(z), (-1, self.num_tokens, self.channels))
        return self.norm(self.position(tokens), training=training)

    def get_config(self):
        return {
            **super().get_config(),
            "num_tokens": self.num_tokens,
            "channels": self.channels,
        }


class GridTokens(keras.layers.Layer):
    """VQ-HiT's latent tokens from the quantised grid [B, g, g, D]: the grid average-pooled to s x s regions
    (s^2 = num_tokens), each region's mean vector projected to `channels`, + P, norm (hit.models.vq_hit).

    The same form as LatentEmbedding (Linear, position embedding, the generator's norm) with the pooled grid
    in place of z.
    """

    def __init__(self, num_tokens, channels, grid_size, norm=Norm(), **kwargs):
        side = int(round(num_tokens**0.5))
        if side * side != num_tokens or grid_size % side:
            raise ValueError(f"bad token count: {num_tokens} tokens must be a square grid whose side divides the "
                             f"{grid_size}x{grid_size} code grid")
        super().__init__(**kwargs)
        self.num_tokens, self.channels, self.grid_size, self.side = num_tokens, channels, grid_size, side
        self.dense = keras.layers.Dense(channels, kernel_initializer=trunc_normal(), name="dense")
        self.position = PositionEmbedding(name="position")
        self.norm = norm.make("norm")

    def call(self, grid, training=None):
        pool = self.grid_size // self.side
        pooled = keras.ops.average_pool(grid, pool, strides=pool, padding="valid")  # [B, s, s, D]
        tokens = keras.ops.reshape(self.dense(pooled), (-1, self.num_tokens, self.channels))  # row-major regions
        return self.norm(self.position(tokens), training=training)

    def get_config(self):
        return {**super().get_config(), "num_tokens": self.num_tokens, "channels": self.channels,
                "grid_size": self.grid_size}
