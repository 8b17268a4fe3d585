"""Patches of a latent grid: D's patch embedding and G's unpatchify, one layout for both (official GAT
models/discriminator.py `GATD`, models/generator.py `GAT.unpatchify`).

A p x p patch at grid position (row, col) of an NHWC map is token t = row * g + col (row-major); a token's p*p*c
vector is laid out (p_row, p_col, channel), the order of the official unpatchify and of a Conv2D kernel's
(kernel row, kernel column, input channel) axes.
"""

import math

import keras
import tensorflow as tf


def unpatchify(tokens, patch_size, channels):
    """[batch, g*g, p*p*c] tokens -> NHWC [batch, g*p, g*p, c]."""
    grid = math.isqrt(tokens.shape[1])
    p = patch_size
    if grid * grid != tokens.shape[1] or tokens.shape[2] != p * p * channels:
        raise ValueError(f"unpatchify needs [batch, g*g, {p}*{p}*{channels}] tokens, got {list(tokens.shape)}")
    x = tf.reshape(tokens, (-1, grid, grid, p, p, channels))
    x = tf.transpose(x, (0, 1, 3, 2, 4, 5))  # [batch, row, p_row, col, p_col, c]
    return tf.reshape(x, (-1, grid * p, grid * p, channels))


def patch_embedding(width, patch_size, in_channels, name):
    """Conv2D in_channels -> width, kernel = stride = patch size, with bias (timm's PatchEmbed). Initialised as the
    official code does: xavier-uniform of the weight viewed as [width, in_channels * p * p] (fan_out = width, not
    width * p * p as a plain xavier init of a conv would take), zero bias."""
    limit = math.sqrt(6.0 / (in_channels * patch_size * patch_size + width))
    return keras.layers.Conv2D(width, patch_size, strides=patch_size, padding="valid",
                               kernel_initializer=keras.initializers.RandomUniform(-limit, limit), name=name)
