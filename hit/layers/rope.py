"""GAT's fixed 2-D position encodings (official GAT models/pos_embed.py, `get_2d_sincos_pos_embed` in
models/generator.py): the absolute sin-cos table added to the tokens, and the rotary embedding (RoPE) applied to
queries and keys. Neither is a weight: both are NumPy constants.

Tokens of a g x g grid are flattened row-major: token t = row * g + col.

Sin-cos table (MAE / DiT, `sincos_2d_table`): for a width C, the first C/2 channels encode the token's *column* and
the last C/2 its *row* (MAE builds its grid with np.meshgrid(w, h), whose first array is the column index). Each
half is [sin(pos * omega_j) for j < C/4] + [cos(pos * omega_j) for j < C/4], omega_j = 10000^(-j / (C/4)).

RoPE (EVA-02's VisionRotaryEmbeddingFast in official GAT models/pos_embed.py; `rope_2d_tables` and `Rotary2D`): with
d = head_dim / 2, the frequencies are f_j = 10000^(-2j / d), j < d/2, each repeated twice (interleaved); the first d
channels of a head rotate by row * f, the last d by col * f. Channels pair up as (x0, x1), (x2, x3), ... and each
pair turns by its angle a: x * cos(a) + rotate_pairs(x) * sin(a), rotate_pairs: (x0, x1) -> (-x1, x0) (GPT-J style,
not the half-split convention): the pair as the complex number x0 + i x1 times e^{i a}. Only the last g*g tokens
turn; D's leading [cls] token does not. The official tables are float32 (positions arange(g) / g * g, frequencies,
products and cos / sin all in float32), and so are these.
"""

import keras
import numpy as np
import tensorflow as tf

ROPE_THETA = 10000.0


def _sincos_1d(dim, positions):
    """[len(positions), dim]: sin(pos * omega) then cos(pos * omega), omega_j = 10000^(-j / (dim/2)), float64."""
    omega = 1.0 / 10000.0 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.outer(np.asarray(positions, np.float64), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d_table(width, grid):
    """Fixed 2-D sin-cos position embedding [grid * grid, width], float32 (module docstring): column half first."""
    if width < 4 or width % 4 or grid < 1:
        raise ValueError(f"the 2-D sin-cos table needs a width divisible by 4 and a grid >= 1, got {width}, {grid}")
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    halves = [_sincos_1d(width // 2, cols.reshape(-1)), _sincos_1d(width // 2, rows.reshape(-1))]
    return np.concatenate(halves, axis=1).astype(np.float32)


def rope_2d_tables(head_dim, grid, theta=ROPE_THETA):
    """(cos, sin) tables [grid * grid, head_dim], float32, of the 2-D RoPE (module docstring)."""
    if head_dim < 4 or head_dim % 4 or grid < 1:
        raise ValueError(f"2-D RoPE needs a head dim divisible by 4 and a grid >= 1, got {head_dim}, {grid}")
    dim = head_dim // 2  # channels per axis
    f32 = np.float32
    frequencies = f32(1.0) / np.power(f32(theta), np.arange(0, dim, 2).astype(f32) / f32(dim))
    positions = np.arange(grid).astype(f32) / f32(grid) * f32(grid)
    angles = np.repeat(np.outer(positions, frequencies).astype(f32), 2, axis=1)  # [g, dim], f0 f0 f1 f1 ...
    rows = np.broadcast_to(angles[:, None, :], (grid, grid, dim))
    cols = np.broadcast_to(angles[None, :, :], (grid, grid, dim))
    full = np.concatenate([rows, cols], axis=-1).reshape(grid * grid, head_dim)
    return np.cos(full).astype(f32), np.sin(full).astype(f32)


def rotate_pairs(x):
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...) along the last axis."""
    pairs = tf.stack([-x[..., 1::2], x[..., 0::2]], axis=-1)
    return tf.reshape(pairs, tf.shape(x))


class Rotary2D(keras.layers.Layer):
    """2-D RoPE of queries or keys x [batch, tokens, heads, head_dim]: the last grid * grid tokens turn by their
    row / column angles; any tokens before them (a [cls] token) pass unchanged. No weights."""

    def __init__(self, head_dim, grid, **kwargs):
        super().__init__(**kwargs)
        self.head_dim, self.grid = head_dim, grid
        self.cos, self.sin = rope_2d_tables(head_dim, grid)

    def call(self, x):
        n = self.grid * self.grid
        if x.shape[1] is not None and (x.shape[1] < n or x.shape[-1] != self.head_dim):
            raise ValueError(f"{self.name}: expected [batch, >= {n} tokens, heads, {self.head_dim}], got {x.shape}")
        cos = tf.cast(self.cos[:, None, :], x.dtype)  # [tokens, 1 (heads), head_dim]
        sin = tf.cast(self.sin[:, None, :], x.dtype)
        spatial = x[:, -n:]
        turned = spatial * cos + rotate_pairs(spatial) * sin
        if x.shape[1] == n:
            return turned
        return tf.concat([x[:, :-n], turned], axis=1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "head_dim": self.head_dim, "grid": self.grid}
