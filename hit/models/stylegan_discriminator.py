"""The discriminator of the official implementation: a StyleGAN2-like ResNet, with plain Keras layers.

x (R x R x 3, in [-1, 1]) -> fromRGB = LReLU(Conv3x3) to ch[R]; then for r = R, R/2, ..., 8 one block
    main = LReLU(Conv3x3(BlurPool(LReLU(Conv3x3(x)))))        ch[r] -> ch[r] -> ch[r/2]
    skip = Conv1x1_nobias(BlurPool(x))                         ch[r] -> ch[r/2]
    x <- (main + skip) / sqrt(2)
and at 4x4 the head: [minibatch stddev] -> LReLU(Conv3x3) -> Flatten -> LReLU(Dense ch[4]) -> Dense 1.

As in the official code: Keras-default glorot_uniform kernels and zero biases, no equalized learning rate,
no spectral norm, no normalization layers, LeakyReLU slope 0.2, minibatch stddev off by default.
"""

import math

import keras
import numpy as np
import tensorflow as tf
from hit.models.symbolic import SymbolicBuild

LRELU_SLOPE = 0.2
HEAD_SIZE = 4  # the blocks halve the image down to 4x4, where the head takes over


def default_channels(channel_multiplier=1):
    """Resolution -> width: 512 up to 32x32, then halving, with the higher widths scaled by the multiplier."""
    m = channel_multiplier
    return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * m, 128: 128 * m, 256: 64 * m, 512: 32 * m, 1024: 16 * m}


def lrelu(x):
    """LeakyReLU(0.2), written as where(x > 0, x, 0.2 x): the same values and gradients as the LeakyRelu op
    (slope 0.2 at 0 too), but TensorFlow's grappler cannot fuse the LeakyRelu op after a conv's BiasAdd when
    its gradient is taken (it logs "remapper failed ... LeakyReluGrad" on every traced train step)."""
    return keras.ops.where(x > 0, x, LRELU_SLOPE * x)


def conv(filters, kernel_size, name, use_bias=True):
    """A plain Conv2D: glorot_uniform kernel and zero bias are the Keras defaults, which the official D keeps."""
    return keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=use_bias, name=name)


class BlurPool2D(keras.layers.Layer):
    """Blur, then keep every other pixel: the official depthwise 4x4 filter outer([1,3,3,1], [1,3,3,1]) / 64 at
    stride 2 with "SAME" padding (one zero pixel on each side of an even input). No weights.

    Computed as three 2x2 average pools, the last at stride 2, on the zero-padded input: [1,1]*[1,1]*[1,1] =
    [1,3,3,1], so the values equal the depthwise convolution's (to float rounding; a slow reference in the tests).
    Why not the depthwise convolution itself: XLA on CPU lowers a depthwise (feature-grouped) convolution to a
    naive loop, 60x slower than TensorFlow's kernel and 65x slower for R1's second derivative; that made the
    XLA-compiled 128 px train step 2.7x slower than it is now (issue 14). Pools are reduce-windows, fast under
    XLA on every backend; in graph mode they cost about 2% of the 128 px train step more than the depthwise kernel.
    """

    def call(self, x):
        x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
        x = tf.nn.avg_pool2d(x, 2, 1, "VALID")
        x = tf.nn.avg_pool2d(x, 2, 1, "VALID")
        return tf.nn.avg_pool2d(x, 2, 2, "VALID")


def downsample(blur_resample, name):
    """BlurPool2D (official default), or 2x2 average pooling with blur_resample=False."""
    return BlurPool2D(name=name) if blur_resample else keras.layers.AveragePooling2D(2, name=name)


class ResidualBlock(keras.layers.Layer):
    """One down-sampling block, in_channels at r x r -> out_channels at r/2 x r/2, (main + skip) / sqrt(2)."""

    def __init__(self, in_channels, out_channels, blur_resample=True, **kwargs):
        super().__init__(**kwargs)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.blur_resample = blur_resample
        self.conv_0 = conv(in_channels, 3, name="conv_0")
        self.down = downsample(blur_resample, name="down")  # no weights: shared by both paths
        self.conv_1 = conv(out_channels, 3, name="conv_1")
        self.skip = conv(out_channels, 1, name="skip", use_bias=False)

    def call(self, x):
        main = lrelu(self.conv_1(self.down(lrelu(self.conv_0(x)))))
        skip = self.skip(self.down(x))
        return (main + skip) / math.sqrt(2.0)

    def get_config(self):
        return {**super().get_config(), "in_channels": self.in_channels, "out_channels": self.out_channels,
                "blur_resample": self.blur_resample}


class MinibatchStddev(keras.layers.Layer):
    """Appends one feature map: the stddev across each group of samples, averaged over (H, W, C) (StyleGAN).

    Groups follow StyleGAN's reshape to [group, batch / group, ...]: with M = batch / group, sample i shares its
    group with samples i mod M, i mod M + M, ... The group is min(group_size, batch); the caller checks that it
    divides the batch.
    """

    def __init__(self, group_size, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        self.group_size = group_size
        self.epsilon = epsilon

    def call(self, x):
        _, height, width, channels = x.shape
        group = tf.minimum(self.group_size, tf.shape(x)[0])
        y = tf.reshape(x, [group, -1, height, width, channels])
        y = tf.cast(y, "float32")
        std = tf.sqrt(tf.reduce_mean(tf.square(y - tf.reduce_mean(y, axis=0)), axis=0) + self.epsilon)
        std = tf.reduce_mean(std, axis=[1, 2, 3], keepdims=True)  # [batch / group, 1, 1, 1]
        std = tf.tile(tf.cast(std, x.dtype), [group, height, width, 1])
        return tf.concat([x, std], axis=-1)

    def get_config(self):
        return {**super().get_config(), "group_size": self.group_size, "epsilon": self.epsilon}


class DiscriminatorHead(keras.layers.Layer):
    """At 4x4: [minibatch stddev] -> LReLU(Conv3x3) -> Flatten -> LReLU(Dense) -> Dense 1, the raw logit."""

    def __init__(self, channels, minibatch_stddev_group=0, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.minibatch_stddev_group = minibatch_stddev_group
        self.stddev = None
        if minibatch_stddev_group:
            self.stddev = MinibatchStddev(minibatch_stddev_group, name="minibatch_stddev")
        self.conv = conv(channels, 3, name="conv")
        self.flatten = keras.layers.Flatten(name="flatten")
        self.dense_0 = keras.layers.Dense(channels, name="dense_0")
        self.dense_1 = keras.layers.Dense(1, name="dense_1")

    def call(self, x):
        if self.stddev is not None:
            x = self.stddev(x)
        x = self.flatten(lrelu(self.conv(x)))
        return self.dense_1(lrelu(self.dense_0(x)))

    def get_config(self):
        return {**super().get_config(), "channels": self.channels,
                "minibatch_stddev_group": self.minibatch_stddev_group}


def validate_config(resolution, channel_multiplier, channels, minibatch_stddev_group):
    """One-line ValueErrors for every configuration that cannot build; returns the resolution -> width table."""
    if channels is None:
        if not isinstance(channel_multiplier, int) or channel_multiplier < 1:
            raise ValueError(f"channel_multiplier must be a positive integer, got {channel_multiplier!r}")
        channels = default_channels(channel_multiplier)
    channels = {int(r): int(c) for r, c in channels.items()}  # JSON configs turn the keys into strings
    power_of_two = isinstance(resolution, int) and resolution >= 8 and not resolution & (resolution - 1)
    if not power_of_two or resolution not in channels:
        raise ValueError(f"bad resolution: {resolution!r} must be a power of two >= 8 in the channel table "
                         f"{sorted(channels)}")
    needed = [HEAD_SIZE * 2**i for i in range(int(math.log2(resolution // HEAD_SIZE)) + 1)]
    missing = [r for r in needed if r not in channels]
    if missing:
        raise ValueError(f"channels has no width for resolution(s) {missing}; a {resolution} D needs {needed}")
    if any(channels[r] < 1 for r in needed):
        raise ValueError(f"channel widths must be positive, got {channels}")
    if not isinstance(minibatch_stddev_group, int) or minibatch_stddev_group < 0:
        raise ValueError(f"minibatch_stddev_group must be an integer >= 0 (0 = off), got {minibatch_stddev_group!r}")
    return {r: channels[r] for r in needed}


class StyleGANDiscriminator(SymbolicBuild, keras.Model):
    """D(images, training) -> logits (B,), float32; images NHWC (B, R, R, 3) in [-1, 1].

    `channels` overrides the whole resolution -> width table (tiny test models); otherwise the default table
    with `channel_multiplier`. `blur_resample=False` swaps the blur pooling for 2x2 average pooling;
    `minibatch_stddev_group` > 0 adds StyleGAN's minibatch stddev channel before the head (official: off).
    `image_channels` is 3 for every paper model; 1 serves gray-scale data such as the Fashion-MNIST demo.
    `training` is accepted for symmetry with G and changes nothing: D has no dropout or normalization.
    """

    def __init__(self, resolution, channel_multiplier=1, channels=None, blur_resample=True,
                 minibatch_stddev_group=0, image_channels=3, name="stylegan_discriminator", **kwargs):
        table = validate_config(resolution, channel_multiplier, channels, minibatch_stddev_group)
        super().__init__(name=name, **kwargs)
        self._config = dict(
            resolution=resolution, channel_multiplier=channel_multiplier,
            channels=None if channels is None else {int(r): int(c) for r, c in channels.items()},
            blur_resample=blur_resample, minibatch_stddev_group=minibatch_stddev_group,
            image_channels=image_channels,
        )
        self.resolution = resolution
        self.image_channels = image_channels
        self.channels = table
        self.minibatch_stddev_group = minibatch_stddev_group
        self.from_rgb = conv(table[resolution], 3, name="from_rgb")
        self.blocks = []
        r = resolution
        while r > HEAD_SIZE:
            self.blocks.append(ResidualBlock(table[r], table[r // 2], blur_resample, name=f"block_{r}"))
            r //= 2
        self.head = DiscriminatorHead(table[HEAD_SIZE], minibatch_stddev_group, name="head")

    def _check_images(self, images):
        shape = list(getattr(images, "shape", np.shape(images)))
        r = self.resolution
        c = self.image_channels
        if len(shape) != 4 or shape[1:] != [r, r, c]:
            raise ValueError(f"{self.name} expects images of shape [batch, {r}, {r}, {c}], got {shape}")
        batch, group = shape[0], self.minibatch_stddev_group
        if group and batch is not None and batch > group and batch % group:
            raise ValueError(f"{self.name}: minibatch_stddev_group {group} must divide the batch {batch}")

    def __call__(self, images, *args, **kwargs):
        # Checked here, before Keras wraps errors raised in call() into a multi-line report.
        self._check_images(images)
        return super().__call__(images, *args, **kwargs)

    def call(self, images, training=None):
        x = lrelu(self.from_rgb(images))
        for block in self.blocks:
            x = block(x)
        return keras.ops.cast(keras.ops.squeeze(self.head(x), axis=-1), "float32")

    def symbolic_input_shapes(self, batch_size):
        return [(batch_size, self.resolution, self.resolution, self.image_channels)]

    def get_config(self):
        return {**super().get_config(), **self._config}
