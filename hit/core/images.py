"""Images at the library's edges: the generator works in [-1, 1]; uint8 appears only here."""

import os

import numpy as np
import tensorflow as tf


def to_uint8(images):
    """[-1, 1] float -> uint8, clipping first so out-of-range values saturate instead of wrapping."""
    images = tf.clip_by_value(tf.convert_to_tensor(images, tf.float32), -1.0, 1.0)
    return tf.cast(tf.round((images + 1.0) * 127.5), tf.uint8)


def rgb_if_mixed(arrays):
    """Image arrays [..., C] to show side by side: gray ones tiled to 3 channels when the others are RGB (a 1-channel
    run's samples beside 3-channel images)."""
    if len({a.shape[-1] for a in arrays}) == 1:
        return list(arrays)
    return [np.broadcast_to(a, a.shape[:-1] + (3,)) if a.shape[-1] == 1 else a for a in arrays]


def image_grid(images, columns=None):
    """(N, H, W, C) -> (rows*H, columns*W, C), filled row by row; unused cells stay black."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"image_grid expects [N, H, W, C] images, got shape {list(images.shape)}")
    n, h, w, c = images.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    grid = np.zeros((rows * h, columns * w, c), images.dtype)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[r * h:(r + 1) * h, col * w:(col + 1) * w] = image
    return grid


def write_png(path, images, columns=None):
    """Write [-1, 1] images (N, H, W, C) as one PNG grid, creating parent directories."""
    grid = image_grid(to_uint8(images).numpy(), columns)
    parent = os.path.dirname(path)
    if parent:
        tf.io.gfile.makedirs(parent)
    tf.io.write_file(path, tf.io.encode_png(grid))
