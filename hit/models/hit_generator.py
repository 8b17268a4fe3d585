"""The HiT generator: Algorithm 1 of the paper, with the official implementation's details (hit-gan
models/generators.py `HiTGenerator`).

z -> X_0 (8x8) and latent tokens Z; then stage l = 0 .. M+N-1 at resolution 8 * 2^l:
    X <- X + P_X                                     position embedding
    X <- Block(X)                                    low-resolution stages only (Alg. 3)
    X <- CrossAttentionBlock(X, Z)                   self-modulation (Sec. 3.3), first in every stage
    X <- L x MultiAxisBlock(X)  or  L x MLPBlock(X)  low / high-resolution stages (Sec. 3.1, 3.2)
    X <- UnBlock(X)
    I <- UpSampleNN(I) + RGB(X)                      high-resolution stages only
    X <- Linear(PixelShuffle(X))                     all stages but the last
The image I has no output activation; clip it to [-1, 1] when sampling.

A stage is "high-resolution" (MLP only, emits RGB) when its block size is None, as in the official code.
"""

import keras
import numpy as np
import tensorflow as tf

from hit.layers.attention import ATTENTION_TYPES, CrossAttention, MultiAxisAttention, self_attention_layout
from hit.layers.blocking import block_images, unblock_images
from hit.layers.embeddings import InitialFeatureMap, LatentEmbedding, PositionEmbedding
from hit.layers.normalization import Norm
from hit.layers.transformer_block import TransformerBlock
from hit.layers.upsampling import PixelShuffle, SkipToRGB
from hit.models.symbolic import SymbolicBuild

INITIAL_SIZE = 8  # "HiT starts from an initial feature of size 8 x 8" (Sec. 4.2)


class HiTStage(keras.layers.Layer):
    """One stage of Algorithm 1. Returns the next stage's input (None after the last) and the image."""

    def __init__(self, resolution, channels, num_heads, num_layers, block_size, next_channels,
                 attention_type="multi_axis", self_attention=True, cross_attention=True,
                 multi_query=True, norm=Norm(), output_channels=3, **kwargs):
        super().__init__(**kwargs)
        self.resolution = resolution
        self.block_size = block_size
        high_resolution = block_size is None
        self_attention = self_attention and not high_resolution
        # All layers of a stage share one layout: every attention type blocks in all or none of them.
        self.blocked = self_attention and self_attention_layout(attention_type, 0)[0]

        self.position = PositionEmbedding(name="position")
        cross = CrossAttention(channels, num_heads, multi_query, name="cross_attention") if cross_attention else None
        self.cross_block = TransformerBlock(channels, cross, norm, name="cross_block")
        self.blocks = []
        for i in range(num_layers):
            attention = None
            if self_attention:
                head_axes = self_attention_layout(attention_type, i)[1]
                attention = MultiAxisAttention(channels, num_heads, head_axes, multi_query, name="self_attention")
            self.blocks.append(TransformerBlock(channels, attention, norm, name=f"block_{i}"))
        self.to_rgb = SkipToRGB(output_channels, norm, name="to_rgb") if high_resolution else None
        self.upsample = PixelShuffle(channels, next_channels, name="pixel_shuffle") if next_channels else None

    def call(self, x, tokens, image=None, training=None):
        x = self.position(x)
        if self.blocked:
            x = block_images(x, self.block_size)
        x = self.cross_block(x, tokens, training=training)
        for block in self.blocks:
            x = block(x, training=training)
        if self.blocked:
            x = unblock_images(x, self.resolution, self.resolution)
        if self.to_rgb is not None:
            image = self.to_rgb(x, image, training=training)
        if self.upsample is not None:
            x = self.upsample(x)
        return x, image


def validate_config(output_size, latent_dim, channels, num_heads, num_layers, block_sizes,
                    attention_type, num_attention_stages, latent_token_channels, initial_size=INITIAL_SIZE):
    """One-line ValueErrors for every configuration that cannot build (checked before any weight exists;
    the norm options are checked by hit.layers.normalization.Norm). initial_size: the first stage's
    resolution (8 for the generator, the code grid for VQ-HiT's decoder)."""
    lengths = {len(channels), len(num_heads), len(num_layers), len(block_sizes)}
    if len(lengths) != 1:
        raise ValueError(
            "channels, num_heads, num_layers and block_sizes need one entry per stage, got lengths "
            f"{len(channels)}, {len(num_heads)}, {len(num_layers)}, {len(block_sizes)}"
        )
    num_stages = len(channels)
    final = initial_size * 2 ** (num_stages - 1)
    if output_size != final:
        raise ValueError(
            f"bad resolution: output_size {output_size} cannot come from {num_stages} stages starting at "
            f"{initial_size}x{initial_size} (they end at {final}x{final}); use one stage per doubling"
        )
    if latent_dim < 1 or (latent_token_channels is not None and latent_token_channels < 1):
        raise ValueError(f"latent sizes must be positive, got latent_dim={latent_dim}")
    if attention_type not in ATTENTION_TYPES:
        raise ValueError(f"unknown attention_type {attention_type!r}; expected one of {ATTENTION_TYPES}")
    if block_sizes[-1] is not None:
        raise ValueError("the last stage must be a high-resolution stage (block size None) to emit RGB")
    num_low = sum(b is not None for b in block_sizes)
    if any(b is not None for b in block_sizes[num_low:]) or any(b is None for b in block_sizes[:num_low]):
        raise ValueError(f"block sizes {block_sizes}: low-resolution stages (a block size) must come first")
    if num_attention_stages is not None and not 0 <= num_attention_stages <= num_low:
        raise ValueError(f"num_attention_stages must be in [0, {num_low}], got {num_attention_stages}")
    head_groups = len(self_attention_layout(attention_type, 0)[1])
    for i, (c, h, b) in enumerate(zip(channels, num_heads, block_sizes)):
        res = initial_size * 2**i
        where = f"stage {i} ({res}x{res}, {c} channels)"
        if h < 1 or c % h:
            raise ValueError(f"bad heads: {h} heads do not divide {c} channels in {where}")
        if b is not None and h % head_groups:
            raise ValueError(f"bad heads: {attention_type} attention splits heads in {head_groups}, "
                             f"but {where} has {h} heads")
        if b is not None and (b < 1 or res % b):
            raise ValueError(f"bad block size: {b} does not divide the {res}x{res} feature map of {where}")
        if i + 1 < num_stages and c % 4:
            raise ValueError(f"pixel shuffle needs channels divisible by 4, {where}")


def make_stages(initial_size, channels, num_heads, num_layers, block_sizes, attention_type, num_attention_stages,
                cross_attention, multi_query, norm, output_channels):
    """The HiTStages of Algorithm 1 from a first resolution on, one per doubling (shared with VQ-HiT's
    decoder, which starts at its code grid)."""
    num_low = sum(b is not None for b in block_sizes)
    attention_stages = num_low if num_attention_stages is None else num_attention_stages
    return [
        HiTStage(resolution=initial_size * 2**i, channels=channels[i], num_heads=num_heads[i],
                 num_layers=num_layers[i], block_size=block_sizes[i],
                 next_channels=channels[i + 1] if i + 1 < len(channels) else None,
                 attention_type=attention_type, self_attention=i < attention_stages,
                 cross_attention=cross_attention, multi_query=multi_query, norm=norm,
                 output_channels=output_channels, name=f"stage_{i}")
        for i in range(len(channels))
    ]


class LatentInput:
    """Mixin of generators called as G(z): a z of the wrong shape is a one-line error naming the expected one."""

    def _check_latent(self, z):
        shape = list(getattr(z, "shape", np.shape(z)))
        if len(shape) != 2 or shape[-1] != self.latent_dim:
            raise ValueError(f"{self.name} expects z of shape [batch, {self.latent_dim}], got {shape}")

    def __call__(self, z, *args, **kwargs):
        # Checked here, before Keras wraps errors raised in call() into a multi-line report.
        self._check_latent(z)
        return super().__call__(z, *args, **kwargs)


class HiTGenerator(LatentInput, SymbolicBuild, keras.Model):
    """G(z, training) -> images (B, output_size, output_size, output_channels), float32, no tanh.

    Per-stage lists: channels, num_heads, num_layers (layers after the stage's cross-attention block) and
    block_sizes (None marks an MLP-only high-resolution stage). Ablation switches (Tables 5, 6, 8):
    attention_type (see hit.layers.attention.self_attention_layout), num_attention_stages (self-attention
    in the first a low-resolution stages only, Table 6 "[a, b]"), norm_type ("batch" / "layer"),
    multi_query (MQA / MHA), cross_attention (off keeps each cross block's MLP, so depth is unchanged).
    BatchNorm as the official TPU runs (hit.layers.normalization): bn_group_size (statistics over fixed groups
    of that many samples; None: each replica's whole batch) and bn_unbiased_moving_variance (Keras 2's).
    """

    def __init__(self, output_size, latent_dim, channels, num_heads, num_layers, block_sizes,
                 num_latent_tokens=16, latent_token_channels=None, attention_type="multi_axis",
                 num_attention_stages=None, cross_attention=True, multi_query=True, norm_type="batch",
                 bn_group_size=None, bn_unbiased_moving_variance=True, output_channels=3, name="hit_generator",
                 **kwargs):
        channels, num_heads, num_layers, block_sizes = map(tuple, (channels, num_heads, num_layers, block_sizes))
        validate_config(output_size, latent_dim, channels, num_heads, num_layers, block_sizes,
                        attention_type, num_attention_stages, latent_token_channels)
        norm = Norm(norm_type, bn_group_size, bn_unbiased_moving_variance)
        super().__init__(name=name, **kwargs)
        self._config = dict(
            output_size=output_size, latent_dim=latent_dim, channels=channels, num_heads=num_heads,
            num_layers=num_layers, block_sizes=block_sizes, num_latent_tokens=num_latent_tokens,
            latent_token_channels=latent_token_channels, attention_type=attention_type,
            num_attention_stages=num_attention_stages, cross_attention=cross_attention,
            multi_query=multi_query, norm_type=norm_type, bn_group_size=bn_group_size,
            bn_unbiased_moving_variance=bn_unbiased_moving_variance, output_channels=output_channels,
        )
        self.latent_dim = latent_dim
        self.initial = InitialFeatureMap(channels[0], INITIAL_SIZE, name="initial")
        self.latent_embedding = None
        if cross_attention:
            self.latent_embedding = LatentEmbedding(
                num_latent_tokens, latent_token_channels or channels[0], norm, name="latent_embedding"
            )
        self.stages = make_stages(INITIAL_SIZE, channels, num_heads, num_layers, block_sizes, attention_type,
                                  num_attention_stages, cross_attention, multi_query, norm, output_channels)

    def stage_outputs(self, z, training=None):
        """[(features, image)] after every stage; the image is None before the first RGB stage."""
        self._check_latent(z)
        x = self.initial(z)
        tokens = None if self.latent_embedding is None else self.latent_embedding(z, training=training)
        image, outputs = None, []
        for stage in self.stages:
            x, image = stage(x, tokens, image, training=training)
            outputs.append((x, image))
        return outputs

    def call(self, z, training=None):
        return keras.ops.cast(self.stage_outputs(z, training=training)[-1][1], "float32")

    def symbolic_input_shapes(self, batch_size):
        return [(batch_size, self.latent_dim)]

    def stage_shapes(self):
        """Per-stage output shapes for batch 1, from a graph trace: [{"features": ..., "image": ...}]."""
        self.build_symbolic()
        trace = tf.function(self.stage_outputs).get_concrete_function(tf.TensorSpec([1, self.latent_dim]))
        return [
            {"features": None if x is None else list(x.shape), "image": None if img is None else list(img.shape)}
            for x, img in trace.structured_outputs
        ]

    def get_config(self):
        return {**super().get_config(), **self._config}
