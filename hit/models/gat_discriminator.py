"""GAT's discriminator D(stacked levels, labels) (hit.models.gat has what it shares with the generator):

Discriminator D(stacked, labels) -> logits [B] (one per sample, float32)

    stacked   the four levels concatenated on channels [B, R, R, 4c], channel = 4 * level + c, shallow first
    tokens    PatchEmbed conv (kernel = stride = p) 4c -> C, + the fixed sin-cos table, a [cls] token N(0, 0.02) first
    blocks    h = h + g1 * Attn(RMSNorm(h));  h = h + g2 * SwiGLU(RMSNorm(h)), RMSNorm with a scale (eps 1e-6),
              LayerScale g1, g2 per channel from 0.1; RoPE turns the spatial tokens only
    logit     <Linear_{C -> 2048}(RMSNorm(h_cls)), e(c)>,  e = EqualLinear(SiLU(EqualLinear(Embedding(c)))), lr 0.01
    REPA      (repa=True) projector C -> 2048 -> 2048 -> 768 with SiLU, on the last block's cls and patch tokens as
              they are (no final norm, as the official GATD.forward), for the alignment to DINOv2 (official
              models/discriminator.py `build_mlp`)

Trainable parameters equal the official models' (tests/test_gat_models.py; excluding the fixed tables, and for G
the unused
patch-embedding conv of c p^2 C + C): GAT-S/2 G 29,256,512, D 32,556,160 + REPA projector 6,558,464. The official D
returns logits [B, 1]; ours are [B].
"""

import keras
import numpy as np
import tensorflow as tf

from hit.layers.equal_linear import EqualLinear
from hit.layers.mlp import SwiGLU, swiglu_hidden_dim
from hit.layers.normalization import RMS_NORM_EPSILON, rms_norm_layer
from hit.layers.patches import patch_embedding
from hit.layers.rope import Rotary2D, sincos_2d_table
from hit.layers.self_attention import SelfAttention
from hit.models.gat import (EMBEDDING_STDDEV, MAPPING_LR_MULTIPLIER, NUM_LEVELS, _check_labels, _static_shape,
                            class_embedding, dense, validate_config)
from hit.models.symbolic import SymbolicBuild, count_parameters


class DiscriminatorBlock(keras.layers.Layer):
    """D's ViT block (official models/discriminator.py `TransformerBlock`): pre-RMSNorm (with a scale) residuals,
    LayerScale per channel from 0.1."""

    def __init__(self, width, heads, mlp_ratio=4.0, layer_scale_init=0.1, **kwargs):
        super().__init__(**kwargs)
        self.norm1 = rms_norm_layer("norm1", RMS_NORM_EPSILON)
        self.attn = SelfAttention(width, heads, name="attn")
        self.norm2 = rms_norm_layer("norm2", RMS_NORM_EPSILON)
        self.mlp = SwiGLU(width, swiglu_hidden_dim(width, mlp_ratio), name="mlp")
        self.width, self.layer_scale_init = width, layer_scale_init

    def build(self, input_shape):
        for layer in (self.norm1, self.attn, self.norm2, self.mlp):
            layer.build(input_shape)
        # Created here, inside the model's build, so that their paths name the model: made in __init__ they were
        # "block_<i>/ls_attn" in every D, and a checkpoint keyed by path below the model kept one block's of four.
        init = keras.initializers.Constant(self.layer_scale_init)
        self.ls_attn = self.add_weight(name="ls_attn", shape=(self.width,), initializer=init)
        self.ls_mlp = self.add_weight(name="ls_mlp", shape=(self.width,), initializer=init)

    def call(self, x, rope=None):
        x = x + self.attn(self.norm1(x), rope=rope) * self.ls_attn
        return x + self.mlp(self.norm2(x)) * self.ls_mlp


class RepaProjector(keras.layers.Layer):
    """REPA's projector (build_mlp): Linear C -> hidden, SiLU, Linear hidden -> hidden, SiLU, Linear hidden -> out."""

    def __init__(self, hidden_dim, output_dim, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.linears = [dense(hidden_dim, "linear_0"), dense(hidden_dim, "linear_1"), dense(output_dim, "linear_2")]

    def build(self, input_shape):
        self.linears[0].build(input_shape)
        for layer in self.linears[1:]:
            layer.build((*input_shape[:-1], self.hidden_dim))

    def call(self, x):
        x = keras.ops.silu(self.linears[0](x))
        return self.linears[2](keras.ops.silu(self.linears[1](x)))


class GATDiscriminator(SymbolicBuild, keras.Model):
    """D(stacked [B, R, R, num_levels * c], labels [B] int) -> logits [B], float32.

    `forward_with_features(stacked, labels)` -> {"logits": [B], "hidden": the last block's tokens [B, 1 + T, C]
    ([cls] first; the official log their std), and with repa=True "repa_cls" [B, repa_dim] and "repa_patches"
    [B, T, repa_dim]}. projection_dim: the class-projection width (the official cmap_dim, 2048).
    """

    def __init__(self, resolution=32, patch_size=2, channels=4, num_levels=NUM_LEVELS, width=384, depth=12, heads=6,
                 num_classes=1000, mlp_ratio=4.0, projection_dim=2048, layer_scale_init=0.1, repa=False,
                 repa_hidden_dim=2048, repa_dim=768, name="gat_discriminator", **kwargs):
        validate_config("discriminator", resolution, patch_size, channels, width, depth, heads, num_classes)
        sizes = dict(num_levels=num_levels, projection_dim=projection_dim, repa_hidden_dim=repa_hidden_dim,
                     repa_dim=repa_dim)
        if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in sizes.values()):
            raise ValueError(f"bad GAT discriminator config: {sizes} must be positive integers")
        super().__init__(name=name, **kwargs)
        self._config = dict(resolution=resolution, patch_size=patch_size, channels=channels, num_levels=num_levels,
                            width=width, depth=depth, heads=heads, num_classes=num_classes, mlp_ratio=mlp_ratio,
                            projection_dim=projection_dim, layer_scale_init=layer_scale_init, repa=repa,
                            repa_hidden_dim=repa_hidden_dim, repa_dim=repa_dim)
        self.resolution, self.patch_size, self.width, self.num_classes = resolution, patch_size, width, num_classes
        self.input_channels = num_levels * channels
        self.grid = resolution // patch_size
        self.patch_embed = patch_embedding(width, patch_size, self.input_channels, "patch_embed")
        self.cls_token = self.add_weight(name="cls_token", shape=(1, 1, width),
                                         initializer=keras.initializers.RandomNormal(stddev=EMBEDDING_STDDEV))
        self.blocks = [DiscriminatorBlock(width, heads, mlp_ratio, layer_scale_init, name=f"block_{i}")
                       for i in range(depth)]
        self.final_norm = rms_norm_layer("final_norm", RMS_NORM_EPSILON)
        self.final_linear = dense(projection_dim, "final_linear")
        self.class_embedding = class_embedding(num_classes, projection_dim, "class_embedding")
        self.class_mapping = [EqualLinear(projection_dim, MAPPING_LR_MULTIPLIER, name=f"class_mapping_{i}")
                              for i in range(2)]
        self.repa_projector = RepaProjector(repa_hidden_dim, repa_dim, name="repa_projector") if repa else None
        self.rope = Rotary2D(width // heads, self.grid, name="rope")
        self.position_table = sincos_2d_table(width, self.grid)  # a constant, not a weight

    def _check_inputs(self, stacked, labels):
        shape = _static_shape(stacked)
        expected = [self.resolution, self.resolution, self.input_channels]
        if len(shape) != 4 or shape[1:] != expected:
            raise ValueError(f"{self.name} expects stacked levels of shape [batch, {', '.join(map(str, expected))}], "
                             f"got {shape}")
        _check_labels(self.name, labels, shape[0])

    def __call__(self, stacked, labels, *args, **kwargs):
        self._check_inputs(stacked, labels)
        return super().__call__(stacked, labels, *args, **kwargs)

    def forward_with_features(self, stacked, labels, training=None):
        del training  # no dropout, no batch statistics
        return self._forward(stacked, labels, repa=self.repa_projector is not None)

    def _forward(self, stacked, labels, repa):
        self._check_inputs(stacked, labels)
        x = self.patch_embed(tf.cast(stacked, self.compute_dtype))
        x = tf.reshape(x, (-1, self.grid * self.grid, self.width)) + tf.cast(self.position_table, x.dtype)
        cls = tf.broadcast_to(tf.cast(self.cls_token, x.dtype), (tf.shape(x)[0], 1, self.width))
        x = tf.concat([cls, x], axis=1)
        for block in self.blocks:
            x = block(x, rope=self.rope)
        e = self.class_embedding(tf.cast(labels, tf.int32))
        e = self.class_mapping[1](keras.ops.silu(self.class_mapping[0](e)))
        logits = tf.reduce_sum(tf.cast(self.final_linear(self.final_norm(x[:, 0])) * e, tf.float32), axis=-1)
        out = {"logits": logits, "hidden": x}
        if repa:
            out["repa_cls"] = tf.cast(self.repa_projector(x[:, 0]), tf.float32)
            out["repa_patches"] = tf.cast(self.repa_projector(x[:, 1:]), tf.float32)
        return out

    def call(self, stacked, labels, training=None):
        del training
        return self._forward(stacked, labels, repa=False)["logits"]

    def symbolic_input_shapes(self, batch_size):
        return None  # every variable follows from the configuration: build() makes them

    def build(self, stacked_shape=None, labels_shape=None):
        """Create every variable from the configuration (the input shapes are fixed by it), the REPA projector's
        too (call() does not run it)."""
        del stacked_shape, labels_shape
        self.patch_embed.build((None, self.resolution, self.resolution, self.input_channels))
        for block in self.blocks:
            block.build((None, 1 + self.grid * self.grid, self.width))
        self.final_norm.build((None, self.width))
        self.final_linear.build((None, self.width))
        self.class_embedding.build((None,))
        self.class_mapping[0].build((None, self.class_embedding.output_dim))
        self.class_mapping[1].build((None, self.class_embedding.output_dim))
        if self.repa_projector is not None:
            self.repa_projector.build((None, self.width))

    def parameter_counts(self):
        """{"discriminator": trainable parameters without the REPA projector, "repa_projector": its own (0 if off)}."""
        repa = [] if self.repa_projector is None else self.repa_projector.trainable_variables
        repa_ids = {id(v) for v in repa}
        rest = [v for v in self.trainable_variables if id(v) not in repa_ids]
        return {"discriminator": count_parameters(rest), "repa_projector": count_parameters(repa)}

    def get_config(self):
        return {**super().get_config(), **self._config}
