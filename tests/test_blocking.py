"""Alg. 3 blocking / unblocking and the pixel shuffle."""

import numpy as np
import pytest
import tensorflow as tf

from hit.layers.blocking import block_images, unblock_images
from hit.layers.upsampling import PixelShuffle


@pytest.mark.parametrize("height,width,p", [(8, 8, 4), (16, 16, 4), (32, 32, 8), (8, 16, 2), (4, 4, 1)])
def test_block_then_unblock_is_identity(height, width, p):
    x = tf.random.normal([2, height, width, 5])
    blocked = block_images(x, p)
    assert blocked.shape == (2, (height // p) * (width // p), p * p, 5)
    np.testing.assert_array_equal(unblock_images(blocked, height, width).numpy(), x.numpy())


@pytest.mark.parametrize("height,width,p", [(8, 8, 4), (8, 16, 4), (12, 6, 3)])
def test_block_places_pixels_as_the_convention_says(height, width, p):
    # Alg. 3: blocked[b, g, q, c] = x[b, gi*p + di, gj*p + dj, c], g = gi*(W/p) + gj, q = di*p + dj.
    x = np.random.default_rng(0).normal(size=(2, height, width, 3)).astype(np.float32)
    blocked = block_images(tf.constant(x), p).numpy()
    for gi in range(height // p):
        for gj in range(width // p):
            for di in range(p):
                for dj in range(p):
                    g, q = gi * (width // p) + gj, di * p + dj
                    np.testing.assert_array_equal(blocked[:, g, q, :], x[:, gi * p + di, gj * p + dj, :])


def test_block_size_that_does_not_divide_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"^block size 3 does not divide the 8x8 feature map$"):
        block_images(tf.zeros([1, 8, 8, 2]), 3)
    with pytest.raises(ValueError, match="not a square"):
        unblock_images(tf.zeros([1, 4, 8, 2]), 8, 8)
    with pytest.raises(ValueError, match="do not tile"):
        unblock_images(tf.zeros([1, 3, 4, 2]), 4, 4)


def test_pixel_shuffle_is_depth_to_space_then_linear():
    x = tf.random.normal([2, 4, 4, 16])
    layer = PixelShuffle(16, 8)
    y = layer(x)
    assert y.shape == (2, 8, 8, 8)
    kernel, bias = (w.numpy() for w in layer.dense.weights)
    shuffled = tf.nn.depth_to_space(x, 2).numpy()
    np.testing.assert_allclose(y.numpy(), shuffled @ kernel + bias, atol=1e-5)
    # Unshuffled pixel (0, 1) of the output comes from channels 4..7 of input pixel (0, 0) (DCR order).
    np.testing.assert_array_equal(shuffled[:, 0, 1, :], x.numpy()[:, 0, 0, 4:8])


def test_pixel_shuffle_skips_the_linear_layer_when_widths_already_match():
    layer = PixelShuffle(16, 4)
    x = tf.random.normal([1, 2, 2, 16])
    np.testing.assert_array_equal(layer(x).numpy(), tf.nn.depth_to_space(x, 2).numpy())
    assert not layer.weights
