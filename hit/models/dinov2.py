"""Frozen DINOv2 ViT-B/14 (no registers) in Keras 3, the feature extractor of GAT's REPA targets (official
GAT utils.py `load_encoders`).

The network, with the Hugging Face `facebook/dinov2-base` config as defaults:

    patch embedding        a 14x14 stride-14 conv, 3 -> 768 (224 px -> a 16x16 grid, tokens row-major)
    tokens                 [cls, patch_0, ..., patch_255] + position embeddings (cls + patches)
    12 pre-norm blocks     x = x + lambda1 * Attn(LN(x));  x = x + lambda2 * fc2(GELU_erf(fc1(LN(x))))
                           12 heads, q/k/v/out Linear with bias, MLP ratio 4, LayerScale per channel
    final LayerNorm        every LayerNorm has epsilon 1e-6
    features               (cls, patches) after the final LayerNorm: DINOv2's x_norm_clstoken and
                           x_norm_patchtokens, what REPA aligns to

Weights come from the Hugging Face safetensors file (hit.models.weights.dinov2_hf.load_dinov2). Its position table is
for a 37x37 grid (518 px); REPA resamples it once to the 16x16 grid of 224 px with timm's `resample_abs_pos_embed`
(bicubic, antialias=True; the cls row kept). `tf.image.resize(bicubic, antialias=True)` is that resampling (PIL-style
kernel, A = -0.5). The model keeps the checkpoint's table as its weight `position_embeddings` (so the parameter count
is the checkpoint's, 86,580,480 with the unused mask token) and uses `position_table`, the resampled copy, computed
once when the model is built and again by `resample_positions()` after a load.

Preprocessing (REPA's, official GAT losses/Rp_PT_loss.py `preprocess_raw_image`): uint8 -> /255 -> ImageNet mean/std
-> PyTorch bicubic resize to 224 (F.interpolate, align_corners=False: A = -0.75, half-pixel centres, borders
clamped, no antialias). Both steps are affine per channel and every row of the resize matrix sums to 1, so
normalising before or after the resize gives the same result up to float rounding; this follows REPA's order
(normalise first).
"""

import keras
import numpy as np
import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYER_NORM_EPSILON = 1e-6
PYTORCH_BICUBIC_A = -0.75  # F.interpolate(mode="bicubic"); PIL and antialiased resizes use -0.5


def cubic_kernel(x, a=PYTORCH_BICUBIC_A):
    """Keys' cubic convolution kernel with coefficient `a` (support [-2, 2]), elementwise on an array."""
    x = np.abs(np.asarray(x, dtype=np.float64))
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def bicubic_matrix(in_size, out_size):
    """[out_size, in_size] float32 matrix M with M @ signal = PyTorch's 1-D bicubic resize of the signal.

    F.interpolate(mode="bicubic", align_corners=False) without antialiasing: source coordinate
    (dst + 0.5) * in / out - 0.5, four taps floor(src) - 1 .. floor(src) + 2 weighted by the A = -0.75 kernel,
    tap indices clamped to [0, in_size - 1] (so border pixels collect the weight of the taps past them).
    """
    if not (isinstance(in_size, int) and isinstance(out_size, int) and in_size > 0 and out_size > 0):
        raise ValueError(f"bicubic_matrix sizes must be positive integers, got {in_size!r} -> {out_size!r}")
    src = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    base = np.floor(src)
    frac = src - base
    matrix = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    for tap in range(-1, 3):
        columns = np.clip(base + tap, 0, in_size - 1).astype(np.int64)
        np.add.at(matrix, (rows, columns), cubic_kernel(tap - frac))
    return matrix.astype(np.float32)


def preprocess(images, size=224):
    """uint8 NHWC images (any height and width) -> float32 [B, size, size, 3], REPA's DINOv2 input."""
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8 or images.shape.rank != 4 or images.shape[-1] != 3:
        raise ValueError(f"DINOv2 expects uint8 images [batch, H, W, 3], got {images.dtype.name} {images.shape}")
    x = (tf.cast(images, tf.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    rows = tf.constant(bicubic_matrix(int(images.shape[1]), size))
    columns = tf.constant(bicubic_matrix(int(images.shape[2]), size))
    x = tf.einsum("oh,bhwc->bowc", rows, x)
    return tf.einsum("pw,bowc->bopc", columns, x)


def resample_position_embeddings(table, grid_out):
    """[1, 1 + g*g, C] cls + row-major grid table -> [1, 1 + grid_out^2, C]: the grid resized as timm's
    resample_abs_pos_embed does (bicubic, antialias=True), the cls row unchanged."""
    table = tf.convert_to_tensor(table, tf.float32)
    grid_in = int(round((table.shape[1] - 1) ** 0.5))
    if grid_in * grid_in + 1 != table.shape[1]:
        raise ValueError(f"position table needs 1 + a square number of rows, got shape {table.shape}")
    if grid_in == grid_out:
        return table
    grid = tf.reshape(table[:, 1:], (1, grid_in, grid_in, table.shape[-1]))
    grid = tf.image.resize(grid, (grid_out, grid_out), method="bicubic", antialias=True)
    return tf.concat([table[:, :1], tf.reshape(grid, (1, grid_out * grid_out, table.shape[-1]))], axis=1)


def layer_norm(name):
    return keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=name)


class Block(keras.layers.Layer):
    """DINOv2's pre-norm ViT block with LayerScale (Hugging Face Dinov2Layer, names as there)."""

    def __init__(self, width, heads, mlp_ratio, **kwargs):
        super().__init__(**kwargs)
        self.width, self.heads, self.mlp_ratio = width, heads, mlp_ratio
        self.norm1 = layer_norm("norm1")
        self.query = keras.layers.Dense(width, name="query")
        self.key = keras.layers.Dense(width, name="key")
        self.value = keras.layers.Dense(width, name="value")
        self.dense = keras.layers.Dense(width, name="dense")
        self.norm2 = layer_norm("norm2")
        self.fc1 = keras.layers.Dense(width * mlp_ratio, name="fc1")
        self.fc2 = keras.layers.Dense(width, name="fc2")

    def build(self, input_shape):
        for layer in (self.norm1, self.query, self.key, self.value, self.dense, self.norm2, self.fc1):
            layer.build(input_shape)
        self.fc2.build((*input_shape[:-1], self.width * self.mlp_ratio))
        self.lambda1 = self.add_weight(shape=(self.width,), initializer="ones", name="layer_scale1")
        self.lambda2 = self.add_weight(shape=(self.width,), initializer="ones", name="layer_scale2")

    def attention(self, x):
        batch, tokens = tf.shape(x)[0], tf.shape(x)[1]
        head_dim = self.width // self.heads
        q, k, v = (tf.reshape(f(x), (batch, tokens, self.heads, head_dim)) for f in (self.query, self.key, self.value))
        weights = tf.nn.softmax(tf.einsum("bqhd,bkhd->bhqk", q, k) * head_dim ** -0.5, axis=-1)
        return self.dense(tf.reshape(tf.einsum("bhqk,bkhd->bqhd", weights, v), (batch, tokens, self.width)))

    def call(self, x):
        x = x + self.lambda1 * self.attention(self.norm1(x))
        return x + self.lambda2 * self.fc2(keras.activations.gelu(self.fc1(self.norm2(x)), approximate=False))

    def get_config(self):
        return {**super().get_config(), "width": self.width, "heads": self.heads, "mlp_ratio": self.mlp_ratio}


class DINOv2(keras.Model):
    """DINOv2 ViT: model(pixels) -> [B, 1 + grid^2, width] tokens after the final LayerNorm, pixels the
    normalised float [B, image_size, image_size, 3]; `features(uint8 images)` -> (cls, patches).

    position_grid is the side of the checkpoint's position table (37 for dinov2-base), grid = image_size /
    patch_size the side the model runs at (16 at 224).
    """

    def __init__(self, image_size=224, patch_size=14, width=768, depth=12, heads=12, mlp_ratio=4,
                 position_grid=37, name="dinov2", **kwargs):
        sizes = dict(image_size=image_size, patch_size=patch_size, width=width, depth=depth, heads=heads,
                     mlp_ratio=mlp_ratio, position_grid=position_grid)
        bad = {k: v for k, v in sizes.items() if not isinstance(v, int) or v < 1}
        if bad or image_size % patch_size or width % heads:
            raise ValueError(f"bad DINOv2 config (positive ints, patch | image_size, heads | width): {sizes}")
        super().__init__(name=name, **kwargs)
        self._config = sizes
        self.image_size, self.patch_size, self.width, self.position_grid = image_size, patch_size, width, position_grid
        self.grid = image_size // patch_size
        self.projection = keras.layers.Conv2D(width, patch_size, strides=patch_size, name="projection")
        self.blocks = [Block(width, heads, mlp_ratio, name=f"layer_{i}") for i in range(depth)]
        self.layernorm = layer_norm("layernorm")
        self.build((None, image_size, image_size, 3))

    def build(self, input_shape):
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.cls_token = self.add_weight(shape=(1, 1, self.width), initializer=init, name="cls_token")
        self.mask_token = self.add_weight(shape=(1, self.width), initializer="zeros", name="mask_token")
        self.position_embeddings = self.add_weight(
            shape=(1, 1 + self.position_grid ** 2, self.width), initializer=init, name="position_embeddings")
        self.projection.build(input_shape)
        for layer in self.blocks + [self.layernorm]:
            layer.build((None, 1 + self.grid ** 2, self.width))
        self.resample_positions()

    def resample_positions(self):
        """Recompute `position_table` (the table at this model's grid) from `position_embeddings`."""
        self.position_table = resample_position_embeddings(self.position_embeddings, self.grid)

    def __call__(self, pixels, *args, **kwargs):
        shape = list(getattr(pixels, "shape", np.shape(pixels)))
        s = self.image_size
        if len(shape) != 4 or shape[1:] != [s, s, 3]:
            raise ValueError(f"{self.name} expects pixels of shape [batch, {s}, {s}, 3], got {shape}")
        return super().__call__(pixels, *args, **kwargs)

    def call(self, pixels):
        x = self.projection(tf.cast(pixels, tf.float32))
        x = tf.reshape(x, (-1, self.grid * self.grid, self.width))
        cls = tf.tile(self.cls_token, (tf.shape(x)[0], 1, 1))
        x = tf.concat([cls, x], axis=1) + self.position_table
        for block in self.blocks:
            x = block(x)
        return self.layernorm(x)

    def features(self, images):
        """uint8 NHWC images (any size; resized to image_size) -> (cls [B, width], patches [B, grid^2, width])."""
        tokens = self(preprocess(images, self.image_size))
        return tokens[:, 0], tokens[:, 1:]

    def get_config(self):
        return {**super().get_config(), **self._config}
