"""Feature blocking and unblocking, paper Algorithm 3.

Index convention (Alg. 3's space_to_depth + reshape, as hit-gan models/generators.py `block_images`):
for a block size p on an (H, W) map,
    blocked[b, g, q, c] = x[b, gi * p + di, gj * p + dj, c],  g = gi * (W / p) + gj,  q = di * p + dj.
Axis 1 says which block (grid position), axis 2 the position inside the block, so attention along axis 2
is regional (inside a block) and attention along axis 1 is dilated (same offset across blocks), Sec. 3.2.
"""

import tensorflow as tf


def _check_divisible(height, width, block_size):
    if block_size < 1 or height % block_size or width % block_size:
        raise ValueError(
            f"block size {block_size} does not divide the {height}x{width} feature map"
        )


def block_images(x, block_size):
    """(B, H, W, C) -> (B, (H/p)(W/p), p*p, C) with `tf.nn.space_to_depth`, Alg. 3 `Block`."""
    if len(x.shape) != 4:
        raise ValueError(f"block_images expects a [batch, H, W, C] tensor, got shape {list(x.shape)}")
    _, height, width, channels = x.shape
    _check_divisible(height, width, block_size)
    # space_to_depth needs a block size >= 2; a block of one pixel is a plain reshape.
    y = tf.nn.space_to_depth(x, block_size) if block_size > 1 else x
    num_blocks = (height // block_size) * (width // block_size)
    return tf.reshape(y, [-1, num_blocks, block_size * block_size, channels])


def unblock_images(x, height, width):
    """(B, (H/p)(W/p), p*p, C) -> (B, H, W, C) with `tf.nn.depth_to_space`, Alg. 3 `UnBlock`.

    The paper's UnBlock recovers H and W from an aspect ratio; passing them explicitly is the same and
    works for any grid.
    """
    if len(x.shape) != 4:
        raise ValueError(f"unblock_images expects a [batch, blocks, block_len, C] tensor, got {list(x.shape)}")
    _, num_blocks, block_len, channels = x.shape
    block_size = int(round(block_len**0.5))
    if block_size * block_size != block_len:
        raise ValueError(f"block length {block_len} is not a square number")
    _check_divisible(height, width, block_size)
    if num_blocks != (height // block_size) * (width // block_size):
        raise ValueError(
            f"{num_blocks} blocks of {block_size}x{block_size} do not tile a {height}x{width} map"
        )
    y = tf.reshape(x, [-1, height // block_size, width // block_size, block_len * channels])
    return tf.nn.depth_to_space(y, block_size) if block_size > 1 else y
