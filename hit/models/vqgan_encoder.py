"""VQGAN's encoder E (Esser et al. 2021, "Taming Transformers"), the encoder of VQ-HiT, as Keras 3 layers (NHWC).

HiT paper, A.5: "We use the same encoder E as the one of VQGAN". This is that encoder with the f16 ImageNet
config as defaults (resolution 256, ch 128, ch_mult (1, 1, 2, 2, 4), 2 res blocks, attention at 16, z 256),
module for module as in VQGAN (taming/modules/diffusionmodules/model.py, Encoder), so that the PyTorch weights
can be loaded one to one (layer names follow its modules: down.0.block.1 -> down_0_block_1):

    conv_in                    3x3 conv, in_channels -> ch
    level i = 0 .. L-1         num_res_blocks x [ResnetBlock(block_in -> ch * ch_mult[i]), AttnBlock if the
                               resolution is in attn_resolutions]; block_in = ch * (1,) + ch_mult [i]
                               then, but for the last level, Downsample: pad right/bottom by 1, 3x3 conv stride 2
    mid                        ResnetBlock(C -> C), AttnBlock(C), ResnetBlock(C -> C)
    norm_out, swish, conv_out  GroupNorm(32), x * sigmoid(x), 3x3 conv C -> z_channels

ResnetBlock(x) = shortcut(x) + conv2(swish(norm2(conv1(swish(norm1(x)))))), shortcut a 1x1 conv (nin_shortcut)
when the width changes; VQGAN's dropout (0.0) and its unused timestep embedding are left out.
AttnBlock(x) = x + proj_out(softmax(q k^T / sqrt(C)) v), a single head over all H * W positions.
GroupNorm: 32 groups, epsilon 1e-6, affine. Every conv is initialised as PyTorch's Conv2d default (what VQGAN
trains from): kernel and bias U(-b, b), b = 1 / sqrt(fan_in).

The f16 config has 29,298,176 trainable parameters (conv_in to conv_out; the quantizer's 1x1 quant_conv is not
part of E) and maps [B, 256, 256, 3] to [B, 16, 16, 256].
"""

import math

import keras
import numpy as np
from hit.models.symbolic import SymbolicBuild

NORM_EPSILON = 1e-6  # VQGAN's Normalize: torch.nn.GroupNorm(num_groups=32, eps=1e-6, affine=True)


def conv(filters, kernel_size, fan_in_channels, name, strides=1, padding="same"):
    """Conv2D with PyTorch's default init: kernel and bias U(-b, b), b = 1 / sqrt(in_channels * k * k).
    VarianceScaling(1/3, fan_in, uniform) has limit sqrt(3 * (1/3) / fan_in) = b for the kernel; a bias has no
    fan-in Keras could infer, so it gets the bound directly."""
    bound = 1.0 / math.sqrt(fan_in_channels * kernel_size * kernel_size)
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding=padding, name=name,
        kernel_initializer=keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_in", distribution="uniform"),
        bias_initializer=keras.initializers.RandomUniform(-bound, bound),
    )


def group_norm(groups, name):
    """VQGAN's Normalize: GroupNorm, epsilon 1e-6, gamma 1 and beta 0 at init (PyTorch's and Keras' default)."""
    return keras.layers.GroupNormalization(groups=groups, epsilon=NORM_EPSILON, name=name)


def swish(x):
    """VQGAN's nonlinearity: x * sigmoid(x)."""
    return x * keras.ops.sigmoid(x)


class ResnetBlock(keras.layers.Layer):
    """x -> shortcut(x) + conv2(swish(norm2(conv1(swish(norm1(x)))))), in_channels -> out_channels."""

    def __init__(self, in_channels, out_channels, groups=32, **kwargs):
        super().__init__(**kwargs)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.groups = groups
        self.norm1 = group_norm(groups, name="norm1")
        self.conv1 = conv(out_channels, 3, in_channels, name="conv1")
        self.norm2 = group_norm(groups, name="norm2")
        self.conv2 = conv(out_channels, 3, out_channels, name="conv2")
        self.nin_shortcut = None
        if in_channels != out_channels:
            self.nin_shortcut = conv(out_channels, 1, in_channels, name="nin_shortcut")

    def call(self, x):
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        shortcut = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return shortcut + h

    def get_config(self):
        return {**super().get_config(), "in_channels": self.in_channels, "out_channels": self.out_channels,
                "groups": self.groups}


class AttnBlock(keras.layers.Layer):
    """x -> x + proj_out(softmax(q k^T * C^-0.5) v): one head over the H * W positions, taken row by row as
    PyTorch's reshape(b, c, h * w) of NCHW does; the softmax (over the keys) runs in float32."""

    def __init__(self, channels, groups=32, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.groups = groups
        self.norm = group_norm(groups, name="norm")
        self.q = conv(channels, 1, channels, name="q")
        self.k = conv(channels, 1, channels, name="k")
        self.v = conv(channels, 1, channels, name="v")
        self.proj_out = conv(channels, 1, channels, name="proj_out")

    def call(self, x):
        _, height, width, channels = x.shape
        h = self.norm(x)
        q, k, v = (keras.ops.reshape(f(h), (-1, height * width, channels)) for f in (self.q, self.k, self.v))
        scores = keras.ops.einsum("bic,bjc->bij", q, k) * (channels ** -0.5)
        weights = keras.ops.cast(keras.ops.softmax(keras.ops.cast(scores, "float32"), axis=-1), v.dtype)
        out = keras.ops.reshape(keras.ops.einsum("bij,bjc->bic", weights, v), (-1, height, width, channels))
        return x + self.proj_out(out)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "groups": self.groups}


class Downsample(keras.layers.Layer):
    """VQGAN's Downsample(with_conv=True): zero-pad right and bottom by one pixel (pad (0, 1, 0, 1)), then a 3x3
    conv with stride 2 and no padding; H x W -> H/2 x W/2, same channels."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.conv = conv(channels, 3, channels, name="conv", strides=2, padding="valid")

    def call(self, x):
        return self.conv(keras.ops.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]]))

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


def validate_config(resolution, in_channels, channels, channel_multipliers, num_res_blocks, z_channels, groups):
    """One-line ValueErrors for every configuration that cannot build (checked before any weight exists)."""
    if not channel_multipliers:
        raise ValueError("channel_multipliers must name at least one level, got ()")
    sizes = dict(resolution=resolution, in_channels=in_channels, channels=channels, z_channels=z_channels,
                 groups=groups, channel_multipliers=min(channel_multipliers))
    bad = {k: v for k, v in sizes.items() if not isinstance(v, int) or v < 1}
    if bad:
        raise ValueError(f"encoder sizes must be positive integers, got {bad}")
    if not isinstance(num_res_blocks, int) or num_res_blocks < 1:
        raise ValueError(f"num_res_blocks must be an integer >= 1, got {num_res_blocks!r}")
    factor = 2 ** (len(channel_multipliers) - 1)
    if resolution % factor:
        raise ValueError(f"bad resolution: {len(channel_multipliers)} levels halve it {factor}x, which does not "
                         f"divide {resolution}")
    widths = sorted({channels * m for m in (1,) + channel_multipliers})
    if any(w % groups for w in widths):
        raise ValueError(f"bad groups: {groups} groups do not divide every width {widths}")


class VQGANEncoder(SymbolicBuild, keras.Model):
    """E(images, training) -> z (B, R / 2^(L-1), R / 2^(L-1), z_channels), float32; images NHWC (B, R, R, C).

    VQGAN's Encoder (double_z=False, as in its VQ models) with its config names: channels = ch, channel_multipliers
    = ch_mult (L levels), attention_resolutions = attn_resolutions. `training` changes nothing (no dropout,
    GroupNorm has no batch statistics).
    """

    def __init__(self, resolution=256, in_channels=3, channels=128, channel_multipliers=(1, 1, 2, 2, 4),
                 num_res_blocks=2, attention_resolutions=(16,), z_channels=256, groups=32, name="encoder",
                 **kwargs):
        channel_multipliers, attention_resolutions = tuple(channel_multipliers), tuple(attention_resolutions)
        validate_config(resolution, in_channels, channels, channel_multipliers, num_res_blocks, z_channels, groups)
        super().__init__(name=name, **kwargs)
        self._config = dict(
            resolution=resolution, in_channels=in_channels, channels=channels,
            channel_multipliers=channel_multipliers, num_res_blocks=num_res_blocks,
            attention_resolutions=attention_resolutions, z_channels=z_channels, groups=groups,
        )
        self.resolution = resolution
        self.in_channels = in_channels
        self.z_channels = z_channels
        # Encoder.__init__ of VQGAN, flattened: the encoder is one chain, so `body` holds every layer in order.
        self.conv_in = conv(channels, 3, in_channels, name="conv_in")
        self.body = []
        current = resolution
        block_out = channels
        for i, multiplier in enumerate(channel_multipliers):
            block_in = channels * ((1,) + channel_multipliers)[i]
            block_out = channels * multiplier
            for j in range(num_res_blocks):
                self.body.append(ResnetBlock(block_in, block_out, groups, name=f"down_{i}_block_{j}"))
                block_in = block_out
                if current in attention_resolutions:
                    self.body.append(AttnBlock(block_out, groups, name=f"down_{i}_attn_{j}"))
            if i + 1 < len(channel_multipliers):
                self.body.append(Downsample(block_out, name=f"down_{i}_downsample"))
                current //= 2
        self.body += [
            ResnetBlock(block_out, block_out, groups, name="mid_block_1"),
            AttnBlock(block_out, groups, name="mid_attn_1"),
            ResnetBlock(block_out, block_out, groups, name="mid_block_2"),
        ]
        self.norm_out = group_norm(groups, name="norm_out")
        self.conv_out = conv(z_channels, 3, block_out, name="conv_out")

    @property
    def output_resolution(self):
        """Side of the latent grid: resolution / 2^(L-1) (16 for f16 at 256)."""
        return self.resolution // 2 ** (len(self._config["channel_multipliers"]) - 1)

    def _check_images(self, images):
        shape = list(getattr(images, "shape", np.shape(images)))
        r, c = self.resolution, self.in_channels
        if len(shape) != 4 or shape[1:] != [r, r, c]:
            raise ValueError(f"{self.name} expects images of shape [batch, {r}, {r}, {c}], got {shape}")

    def __call__(self, images, *args, **kwargs):
        # Checked here, before Keras wraps errors raised in call() into a multi-line report.
        self._check_images(images)
        return super().__call__(images, *args, **kwargs)

    def call(self, images, training=None):
        x = self.conv_in(images)
        for layer in self.body:
            x = layer(x)
        x = self.conv_out(swish(self.norm_out(x)))
        return keras.ops.cast(x, "float32")

    def symbolic_input_shapes(self, batch_size):
        return [(batch_size, self.resolution, self.resolution, self.in_channels)]

    def get_config(self):
        return {**super().get_config(), **self._config}
