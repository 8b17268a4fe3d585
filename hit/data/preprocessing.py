"""Per-image preprocessing (official hit-gan utils/dataset_utils.py, utils/data_utils.py): crop, bicubic antialiased
resize, flip, values in [-1, 1]; and ADM's centre crop, with which GAT's latent data sets are made (REPA's
preprocessing, which official GAT's README prescribes).

Crops keep the aspect ratio: a square of side `crop_proportion * shorter side`, at a random position for
training and centred for evaluation (ImageNet: 0.875, paper Sec. 4.1); "fixed" resizes the whole image.
The official code casts the resized image straight to uint8, which lets bicubic overshoot wrap around
(-3.7 -> 253 on CPU); we clip to [0, 255] and round first, so bright and dark edges stay bright and dark.
"""

import numpy as np
import PIL.Image
import tensorflow as tf

CROPS = ("random", "center", "fixed")


def crop_window(height, width, crop_proportion, mode, seed=None):
    """(top, left, size) of the square crop, as int32 scalars; mode "random" needs a stateless seed."""
    size = tf.cast(tf.cast(tf.minimum(height, width), tf.float32) * crop_proportion, tf.int32)
    if mode == "center":
        return (height - size + 1) // 2, (width - size + 1) // 2, size
    offsets = tf.random.stateless_uniform([2], seed, maxval=tf.int32.max, dtype=tf.int32, alg="philox")
    return offsets[0] % (height - size + 1), offsets[1] % (width - size + 1), size


def preprocess(image, resolution, crop="center", crop_proportion=1.0, flip=False, seed=None, channels=3):
    """uint8 (H, W, C) -> float32 (resolution, resolution, channels) in [-1, 1].

    `seed` ([2] ints) drives the random crop and flip statelessly, so a seeded pipeline is reproducible.
    """
    if crop not in CROPS:
        raise ValueError(f"unknown crop {crop!r}; expected one of {CROPS}")
    if not 0.0 < crop_proportion <= 1.0:
        raise ValueError(f"crop_proportion must be in (0, 1], got {crop_proportion}")
    if (crop == "random" or flip) and seed is None:
        raise ValueError("a random crop or flip needs a seed")
    image = tf.convert_to_tensor(image)
    if image.shape.rank != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {image.shape}")
    if crop != "fixed":
        shape = tf.shape(image)
        crop_seed = None if seed is None else tf.random.experimental.stateless_fold_in(seed, 0, alg="philox")
        top, left, size = crop_window(shape[0], shape[1], crop_proportion, crop, crop_seed)
        image = image[top:top + size, left:left + size]
    image = tf.image.resize(tf.cast(image, tf.float32), [resolution, resolution], method="bicubic", antialias=True)
    image = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)  # clip, not wrap (see above)
    if flip:
        flip_seed = tf.random.experimental.stateless_fold_in(seed, 1, alg="philox")
        coin = tf.random.stateless_uniform([], flip_seed, alg="philox") < 0.5
        image = tf.cond(coin, lambda: tf.reverse(image, axis=[1]), lambda: image)
    image = tf.cast(image, tf.float32) / 127.5 - 1.0
    if channels != image.shape[-1]:
        image = to_channels(image, channels)
    image.set_shape([resolution, resolution, channels])
    return image


def to_channels(image, channels):
    """Gray <-> RGB for [-1, 1] images: replicate one channel, or average three."""
    current = image.shape[-1]
    if channels == current:
        return image
    if current == 1 and channels == 3:
        return tf.tile(image, [1, 1, 3])
    if current == 3 and channels == 1:
        return tf.reduce_mean(image, axis=-1, keepdims=True)
    raise ValueError(f"cannot convert {current} channels to {channels}")


def adm_center_crop(image, size):
    """ADM's (guided-diffusion's) centre crop, uint8 (H, W, C) -> (size, size, C), in PIL as ADM does it: halve
    with a box filter while the shorter side is at least 2 * size, resize the shorter side to `size` with PIL's
    bicubic (rounding the other side), then cut the centre square (offsets rounded down)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, C) image, got {image.dtype} of shape {list(image.shape)}")
    pil = PIL.Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    while min(pil.size) >= 2 * size:
        pil = pil.resize(tuple(side // 2 for side in pil.size), resample=PIL.Image.BOX)
    scale = size / min(pil.size)
    pil = pil.resize(tuple(round(side * scale) for side in pil.size), resample=PIL.Image.BICUBIC)
    array = np.asarray(pil).reshape(pil.size[1], pil.size[0], image.shape[-1])
    top, left = (array.shape[0] - size) // 2, (array.shape[1] - size) // 2
    return np.ascontiguousarray(array[top:top + size, left:left + size])
