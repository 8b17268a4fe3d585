"""How multi-axis attention and full self-attention scale with the number of tokens (paper Sec. 3.2).

For each grid size g (T = g * g tokens of `channels` width) this times one XLA-compiled forward of

    multi_axis : the repo's MultiAxisAttention (half the heads regional, half dilated; multi-query K/V, as HiT)
                 between block_images and unblock_images with a fixed block size p;
    full       : plain multi-head self-attention over all T tokens (Q, K, V and output projections C -> C, einsum,
                 softmax in float32),

and reports the bytes of the largest float32 logits tensor each materialises, from the shapes:

    full       : batch * heads * T * T * 4
    multi_axis : batch * heads / 2 * T * max(p * p, T / (p * p)) * 4   (regional logits [b, h/2, blocks, p*p, p*p],
                 dilated logits [b, h/2, blocks, p*p, blocks]; the larger of the two)

plus matmul/einsum FLOPs from hit.bench.flops. With a fixed block size the regional work is linear in T (T * p^2)
and the dilated work is T * T / p^2: the linear term dominates while there are at most p^2 blocks
(T <= p^4); beyond that the dilated term grows quadratically, with a p^2-fold smaller constant than full
attention. The fitted exponents a (time ~ c * T^a, least
squares on log-log) show where the measured sizes sit; at small T a fixed per-call cost (~0.5 ms on a CPU)
flattens the time fit, so compare the FLOP exponents and the largest sizes too.

    python -m hit.bench.attention_scaling     (the default sizes, about 10 s on 2 CPU cores)
"""

import json

import keras
import numpy as np
import tensorflow as tf

from hit.bench.benchmark import median_seconds
from hit.bench.flops import count_flops
from hit.layers.attention import MultiAxisAttention
from hit.layers.blocking import block_images, unblock_images

FORMULATIONS = ("multi_axis", "full")


class FullSelfAttention(keras.layers.Layer):
    """Plain multi-head self-attention of x [batch, T, C] over all T positions."""

    def __init__(self, channels, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.head_dim = num_heads, channels // num_heads
        self.qkv = keras.layers.EinsumDense("btc,cshd->btshd", (None, 3, num_heads, self.head_dim), bias_axes="shd")
        self.output_projection = keras.layers.EinsumDense("bthd,hdc->btc", (None, channels), bias_axes="c")

    def call(self, x):
        qkv = self.qkv(x)
        q, k, v = qkv[:, :, 0] * (self.head_dim**-0.5), qkv[:, :, 1], qkv[:, :, 2]
        logits = tf.einsum("bqhd,bkhd->bhqk", q, k)
        weights = tf.cast(tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1), v.dtype)
        return self.output_projection(tf.einsum("bhqk,bkhd->bqhd", weights, v))


def logits_bytes(formulation, grid, num_heads, block_size, batch):
    """Bytes of the largest float32 attention-logits tensor of one layer (formulas in the module docstring)."""
    tokens = grid * grid
    if formulation == "full":
        return batch * num_heads * tokens * tokens * 4
    block_len, num_blocks = block_size * block_size, tokens // (block_size * block_size)
    return batch * (num_heads // 2) * tokens * max(block_len, num_blocks) * 4


def _forward(formulation, grid, channels, num_heads, block_size):
    """A function x [batch, g, g, C] -> [batch, g, g, C] of one attention formulation, its weights built."""
    if formulation == "multi_axis":
        layer = MultiAxisAttention(channels, num_heads)
        layer(tf.zeros([1, grid * grid // block_size**2, block_size**2, channels]))  # creates the weights
        return lambda x: unblock_images(layer(block_images(x, block_size)), grid, grid)
    layer = FullSelfAttention(channels, num_heads)
    layer(tf.zeros([1, grid * grid, channels]))
    return lambda x: tf.reshape(layer(tf.reshape(x, [-1, grid * grid, channels])), [-1, grid, grid, channels])


def fit_exponent(tokens, values):
    """a of values ~ c * tokens^a, least squares on log-log."""
    return float(np.polyfit(np.log(tokens), np.log(values), 1)[0])


def scaling_report(grid_sizes=(8, 16, 32, 64), channels=64, num_heads=4, block_size=8, batch=1, repeats=5):
    """Per-size timings, logits bytes and FLOPs of both formulations, and fitted exponents.

    Returns {"rows": [per grid size: {"grid", "tokens", "<f>_ms", "<f>_logits_bytes", "<f>_flops"} for f in
    FORMULATIONS], "time_exponents": {f: a}, "flops_exponents": {f: a}}. Every grid size must be a multiple of
    block_size, num_heads even.
    """
    rows = []
    for grid in grid_sizes:
        x = tf.random.normal([batch, grid, grid, channels], seed=grid)
        row = {"grid": grid, "tokens": grid * grid}
        for name in FORMULATIONS:
            fn = tf.function(_forward(name, grid, channels, num_heads, block_size), jit_compile=True)
            row[f"{name}_ms"] = round(1000 * median_seconds(lambda: fn(x), repeats), 3)
            row[f"{name}_logits_bytes"] = logits_bytes(name, grid, num_heads, block_size, batch)
            row[f"{name}_flops"] = count_flops(fn, tf.TensorSpec(x.shape))["total"]
        rows.append(row)
    tokens = [r["tokens"] for r in rows]
    exponents = {
        kind: {name: fit_exponent(tokens, [r[f"{name}_{key}"] for r in rows]) for name in FORMULATIONS}
        for kind, key in (("time_exponents", "ms"), ("flops_exponents", "flops"))
    }
    return {"rows": rows, **exponents}


if __name__ == "__main__":
    report = scaling_report()
    for row in report["rows"]:
        print(json.dumps(row))
    print(json.dumps({k: {n: round(a, 2) for n, a in v.items()} for k, v in report.items() if k != "rows"}))
