"""The "ConvNet-R1" baseline of Table 1: a SAGAN / BigGAN-style ResNet generator, trained with HiT's setup.

Architecture (SAGAN, Zhang et al. 2019, Sec. 5 and its code; the generator BigGAN, Brock et al. 2019, Table 4
and Fig. 15a, also uses):
    z -> Dense -> 4x4 x channels[0]
    one residual up-block per doubling: BN -> ReLU -> nearest 2x -> 3x3 conv -> BN -> ReLU -> 3x3 conv,
        plus the skip nearest 2x -> 1x1 conv; the two are summed
    a self-attention block after the block that reaches `attention_resolution` (SAGAN and BigGAN: 64 for 128 px)
    BN -> ReLU -> 3x3 conv to output_channels

Choices made here:
- No spectral normalisation: SAGAN puts SN in G too, but Table 1's ConvNet-R1 is trained with HiT's setup, whose
  generator has none (R1 on D regularises training).
- No tanh at the end, as the repository's HiTGenerator: G returns unbounded float32 images, clipped to [-1, 1]
  when sampling.
- Plain BatchNorm (the repository's GroupedBatchNormalization, so bn_group_size works as for HiT), not BigGAN's
  conditional BN: the model is unconditional. norm_type "layer" (per-pixel LayerNorm, not part of SAGAN) is
  accepted too; in the demo it did worse (gin/demo/fashion_mnist_32_convnet.gin).
- Attention as BigGAN's (its SAGAN layer): 1x1 convs without bias, query C/8, key C/8 and value C/2, keys and
  values 2x2 max-pooled, a 1x1 conv back to C, and out = x + gamma * attention with gamma initialised to 0.
- Keras' default initialisers (Glorot uniform, zero biases), not BigGAN's orthogonal initialisation.
"""

import math

import keras
import numpy as np

from hit.layers.normalization import Norm
from hit.models.hit_generator import LatentInput
from hit.models.symbolic import SymbolicBuild

INITIAL_SIZE = 4  # SAGAN / BigGAN map z to a 4x4 feature map


class UpBlock(keras.layers.Layer):
    """SAGAN / BigGAN generator residual block with 2x nearest-neighbour upsampling (module docstring)."""

    def __init__(self, channels, norm=Norm(), **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.norm1 = norm.make("norm1")
        self.conv1 = keras.layers.Conv2D(channels, 3, padding="same", name="conv1")
        self.norm2 = norm.make("norm2")
        self.conv2 = keras.layers.Conv2D(channels, 3, padding="same", name="conv2")
        self.skip = keras.layers.Conv2D(channels, 1, name="skip")
        self.upsample = keras.layers.UpSampling2D(2, interpolation="nearest", name="upsample")

    def call(self, x, training=None):
        h = self.upsample(keras.ops.relu(self.norm1(x, training=training)))
        h = self.conv1(h)
        h = self.conv2(keras.ops.relu(self.norm2(h, training=training)))
        return h + self.skip(self.upsample(x))


class SelfAttention2D(keras.layers.Layer):
    """SAGAN's self-attention (Sec. 3) with BigGAN's 2x2 max-pooled keys and values; gamma starts at 0."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        if channels % 8:
            raise ValueError(f"{self.name}: attention needs channels divisible by 8, got {channels}")
        self.channels = channels
        conv = dict(kernel_size=1, use_bias=False)
        self.query = keras.layers.Conv2D(channels // 8, name="query", **conv)  # SAGAN's g
        self.key = keras.layers.Conv2D(channels // 8, name="key", **conv)  # SAGAN's f
        self.value = keras.layers.Conv2D(channels // 2, name="value", **conv)  # SAGAN's h
        self.output_conv = keras.layers.Conv2D(channels, name="output", **conv)  # SAGAN's v
        self.pool = keras.layers.MaxPooling2D(2, name="pool")

    def build(self, input_shape):
        self.gamma = self.add_weight(shape=(), initializer="zeros", name="gamma")  # SAGAN: y = gamma * o + x
        super().build(input_shape)

    def call(self, x):
        _, height, width, _ = x.shape
        batch = keras.ops.shape(x)[0]
        q = keras.ops.reshape(self.query(x), (batch, height * width, self.channels // 8))
        k = keras.ops.reshape(self.key(self.pool(x)), (batch, -1, self.channels // 8))
        v = keras.ops.reshape(self.value(self.pool(x)), (batch, -1, self.channels // 2))
        logits = keras.ops.cast(keras.ops.matmul(q, keras.ops.transpose(k, (0, 2, 1))), "float32")
        beta = keras.ops.cast(keras.ops.softmax(logits, axis=-1), v.dtype)  # SAGAN's attention map, per query
        o = keras.ops.reshape(keras.ops.matmul(beta, v), (batch, height, width, self.channels // 2))
        return x + self.gamma * self.output_conv(o)


def validate_config(output_size, latent_dim, channels, attention_resolution, output_channels):
    """One-line ValueErrors for configurations that cannot build."""
    if isinstance(output_size, bool) or not isinstance(output_size, (int, np.integer)) or output_size < 8 \
            or output_size & (output_size - 1):
        raise ValueError(f"bad resolution: output_size must be a power of two >= 8, got {output_size!r}")
    num_blocks = int(math.log2(output_size // INITIAL_SIZE))
    if len(channels) != num_blocks + 1:
        raise ValueError(f"channels needs {num_blocks + 1} widths (4x4 to {output_size}x{output_size}), "
                         f"got {len(channels)}")
    if latent_dim < 1 or output_channels < 1 or min(channels) < 1:
        raise ValueError(f"sizes must be positive, got latent_dim={latent_dim}, channels={channels}, "
                         f"output_channels={output_channels}")
    resolutions = [INITIAL_SIZE * 2**i for i in range(1, num_blocks + 1)]
    if attention_resolution is not None and attention_resolution not in resolutions:
        raise ValueError(f"attention_resolution {attention_resolution!r} is not a block resolution {resolutions}")
    if attention_resolution is not None and channels[resolutions.index(attention_resolution) + 1] % 8:
        raise ValueError(f"attention at {attention_resolution}x{attention_resolution} needs channels divisible by 8")


class ConvNetGenerator(LatentInput, SymbolicBuild, keras.Model):
    """G(z, training) -> images (B, output_size, output_size, output_channels), float32, no tanh.

    channels: widths at 4x4, 8x8, ..., output_size (log2(output_size / 4) + 1 of them); attention_resolution:
    where the self-attention block goes (None: nowhere). BatchNorm options as HiTGenerator's.
    """

    def __init__(self, output_size, latent_dim, channels, attention_resolution=None, output_channels=3,
                 norm_type="batch", bn_group_size=None, bn_unbiased_moving_variance=True,
                 name="convnet_generator", **kwargs):
        channels = tuple(channels)
        validate_config(output_size, latent_dim, channels, attention_resolution, output_channels)
        norm = Norm(norm_type, bn_group_size, bn_unbiased_moving_variance)
        super().__init__(name=name, **kwargs)
        self._config = dict(
            output_size=output_size, latent_dim=latent_dim, channels=channels,
            attention_resolution=attention_resolution, output_channels=output_channels, norm_type=norm_type,
            bn_group_size=bn_group_size, bn_unbiased_moving_variance=bn_unbiased_moving_variance,
        )
        self.latent_dim = latent_dim
        self.initial = keras.layers.Dense(INITIAL_SIZE * INITIAL_SIZE * channels[0], name="initial")
        self.blocks = [UpBlock(c, norm, name=f"block_{i}") for i, c in enumerate(channels[1:])]
        self.attention_index = None  # attention follows blocks[attention_index]
        if attention_resolution is not None:
            self.attention_index = int(math.log2(attention_resolution // INITIAL_SIZE)) - 1
            self.attention = SelfAttention2D(channels[self.attention_index + 1], name="attention")
        self.final_norm = norm.make("final_norm")
        self.to_rgb = keras.layers.Conv2D(output_channels, 3, padding="same", name="to_rgb")

    def call(self, z, training=None):
        x = keras.ops.reshape(self.initial(z), (-1, INITIAL_SIZE, INITIAL_SIZE, self._config["channels"][0]))
        for i, block in enumerate(self.blocks):
            x = block(x, training=training)
            if i == self.attention_index:
                x = self.attention(x)
        x = self.to_rgb(keras.ops.relu(self.final_norm(x, training=training)))
        return keras.ops.cast(x, "float32")

    def symbolic_input_shapes(self, batch_size):
        return [(batch_size, self.latent_dim)]

    def get_config(self):
        return {**super().get_config(), **self._config}
