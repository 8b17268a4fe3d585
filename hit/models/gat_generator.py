"""GAT's generator G(z, labels) (hit.models.gat has what it shares with the discriminator):

Generator G(z, labels) -> latent [B, R, R, c] (R = 32, c = 4: an SD-VAE latent; the demo: 32 x 32 x 1 pixels)

    mapping   w = EqualLinear(SiLU(EqualLinear([n(e(c)), n(z)])))     e: Embedding(classes, 64) N(0, 0.02);
              n(x) = x * rsqrt(mean(x^2) + 1e-8); the class half comes first; both EqualLinear lr 0.01 (official
              models/generator.py `GAT`)
    tokens    h = the fixed 2-D sin-cos table [(R/p)^2, C] (the official input latent and patch-embedding conv are
              multiplied by 0: left out)
    blocks    (s_a, g_a, s_m, g_m) = Linear(SiLU(w)), 4C, split in that order, xavier gain 0.1, bias 0
              h = h + g_a * Attn(RMSNorm(h) * (1 + s_a));  h = h + g_m * SwiGLU(RMSNorm(h) * (1 + s_m))
              RMSNorm without affine, eps 1e-6; Attn: hit.layers.self_attention with 2-D RoPE
    heads     head k reads block (k + 1) * depth/4 - 1: o_k = Linear(RMSNorm(h) * (1 + Linear(SiLU(w)))) -> p*p*c per
              token, unpatchified; levels x_k = o_1 + ... + o_k (shallow to deep); the latent is x_4
"""

import keras
import tensorflow as tf

from hit.layers.equal_linear import EqualLinear
from hit.layers.mlp import SwiGLU, swiglu_hidden_dim
from hit.layers.normalization import rms_norm
from hit.layers.patches import unpatchify
from hit.layers.rope import Rotary2D, sincos_2d_table
from hit.layers.self_attention import SelfAttention
from hit.models.gat import (MAPPING_LR_MULTIPLIER, MODULATION_GAIN, NUM_LEVELS, SECOND_MOMENT_EPSILON, W_AVG_BETA,
                            _check_labels, _static_shape, class_embedding, dense, validate_config)
from hit.models.symbolic import SymbolicBuild, count_parameters


class GeneratorBlock(keras.layers.Layer):
    """GATBlock (official models/generator.py): adaptive RMSNorm (scale only) and gated residuals from w."""

    def __init__(self, width, heads, mlp_ratio=4.0, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.attn = SelfAttention(width, heads, name="attn")
        self.mlp = SwiGLU(width, swiglu_hidden_dim(width, mlp_ratio), name="mlp")
        self.modulation = dense(4 * width, "modulation", gain=MODULATION_GAIN)

    def build(self, input_shape):
        self.attn.build(input_shape)
        self.mlp.build(input_shape)
        self.modulation.build((None, self.width))

    def call(self, x, w, rope=None):
        scale_attn, gate_attn, scale_mlp, gate_mlp = tf.split(self.modulation(keras.ops.silu(w))[:, None], 4, axis=-1)
        x = x + gate_attn * self.attn(rms_norm(x) * (1.0 + scale_attn), rope=rope)
        return x + gate_mlp * self.mlp(rms_norm(x) * (1.0 + scale_mlp))


class OutputHead(keras.layers.Layer):
    """FinalLayer (official models/generator.py): Linear(RMSNorm(h) * (1 + Linear(SiLU(w)))) -> p*p*c values per
    token."""

    def __init__(self, width, patch_size, channels, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.modulation = dense(width, "modulation", gain=MODULATION_GAIN)
        self.linear = dense(patch_size * patch_size * channels, "linear")

    def build(self, input_shape):
        self.modulation.build((None, self.width))
        self.linear.build(input_shape)

    def call(self, x, w):
        return self.linear(rms_norm(x) * (1.0 + self.modulation(keras.ops.silu(w))[:, None]))


class GATGenerator(SymbolicBuild, keras.Model):
    """G(z [B, latent_dim], labels [B] int, truncation_psi=0.0, guidance_scale=1.0) -> latent [B, R, R, c], float32.

    `levels(...)`: the four accumulated levels, shallow to deep (the last is G's output); `mapping(...)`: w [B, C];
    `forward_with_features(...)`: {"latent", "levels", "w", "hidden" (the last block's tokens [B, T, C])}.
    Truncation: w <- w + psi (w_avg[c] - w) (psi 0: off). guidance_scale s != 1: w <- w_null + s (w - w_null), w_null
    the mean of w over all classes for the same z (the official w-space CFG, off by default). `w_avg` [classes, C]
    is a non-trainable variable moved by `update_w_avg(w, labels)`.
    """

    def __init__(self, resolution=32, patch_size=2, output_channels=4, width=384, depth=12, heads=6,
                 num_classes=1000, latent_dim=64, mlp_ratio=4.0, w_avg_beta=W_AVG_BETA, name="gat_generator",
                 **kwargs):
        validate_config("generator", resolution, patch_size, output_channels, width, depth, heads, num_classes)
        if latent_dim < 1 or not 0.0 <= w_avg_beta <= 1.0:
            raise ValueError(f"bad GAT generator config: latent_dim {latent_dim} (>= 1), w_avg_beta {w_avg_beta} "
                             f"(in [0, 1])")
        super().__init__(name=name, **kwargs)
        self._config = dict(resolution=resolution, patch_size=patch_size, output_channels=output_channels,
                            width=width, depth=depth, heads=heads, num_classes=num_classes, latent_dim=latent_dim,
                            mlp_ratio=mlp_ratio, w_avg_beta=w_avg_beta)
        self.resolution, self.patch_size, self.output_channels = resolution, patch_size, output_channels
        self.width, self.num_classes, self.latent_dim, self.w_avg_beta = width, num_classes, latent_dim, w_avg_beta
        self.grid = resolution // patch_size
        self.class_embedding = class_embedding(num_classes, latent_dim, "class_embedding")
        self.mapping_layers = [EqualLinear(width, MAPPING_LR_MULTIPLIER, name=f"mapping_{i}") for i in range(2)]
        self.blocks = [GeneratorBlock(width, heads, mlp_ratio, name=f"block_{i}") for i in range(depth)]
        self.head_blocks = tuple((k + 1) * (depth // NUM_LEVELS) - 1 for k in range(NUM_LEVELS))
        self.output_heads = [OutputHead(width, patch_size, output_channels, name=f"output_head_{k}")
                             for k in range(NUM_LEVELS)]
        self.rope = Rotary2D(width // heads, self.grid, name="rope")
        self.position_table = sincos_2d_table(width, self.grid)  # a constant, not a weight
        self.w_avg = self.add_weight(name="w_avg", shape=(num_classes, width), initializer="zeros", trainable=False)

    def _check_inputs(self, z, labels):
        shape = _static_shape(z)
        if len(shape) != 2 or shape[1] != self.latent_dim:
            raise ValueError(f"{self.name} expects z of shape [batch, {self.latent_dim}], got {shape}")
        _check_labels(self.name, labels, shape[0])

    def __call__(self, z, labels, *args, **kwargs):
        # Checked here, before Keras wraps errors raised in call() into a multi-line report.
        self._check_inputs(z, labels)
        return super().__call__(z, labels, *args, **kwargs)

    def _map(self, embedded, z):
        x = tf.concat([rms_norm(embedded, SECOND_MOMENT_EPSILON), rms_norm(z, SECOND_MOMENT_EPSILON)], axis=-1)
        return self.mapping_layers[1](keras.ops.silu(self.mapping_layers[0](x)))

    def mapping(self, z, labels, truncation_psi=0.0, guidance_scale=1.0):
        """w [B, width] of z [B, latent_dim] and labels [B] (class embedding first, then z), after truncation."""
        self._check_inputs(z, labels)
        z = tf.cast(z, self.compute_dtype)
        labels = tf.cast(labels, tf.int32)
        w = self._map(self.class_embedding(labels), z)
        if not (isinstance(truncation_psi, (int, float)) and truncation_psi == 0):
            w = w + tf.cast(truncation_psi, w.dtype) * (tf.gather(tf.cast(self.w_avg, w.dtype), labels) - w)
        if not (isinstance(guidance_scale, (int, float)) and guidance_scale == 1):
            every_class = self.class_embedding(tf.range(self.num_classes))  # [K, latent]
            batch = tf.shape(z)[0]
            embedded = tf.broadcast_to(every_class[None], (batch, self.num_classes, self.latent_dim))
            repeated = tf.broadcast_to(z[:, None], (batch, self.num_classes, self.latent_dim))
            w_null = tf.reduce_mean(tf.stop_gradient(self._map(embedded, repeated)), axis=1)
            w = w_null + tf.cast(guidance_scale, w.dtype) * (w - w_null)
        return w

    def forward_with_features(self, z, labels, truncation_psi=0.0, guidance_scale=1.0, training=None):
        """{"latent": [B, R, R, c], "levels": 4 x [B, R, R, c] (float32, shallow to deep), "w": [B, C],
        "hidden": the last block's tokens [B, T, C] (the official log their std)}."""
        del training  # no dropout, no batch statistics
        w = self.mapping(z, labels, truncation_psi, guidance_scale)
        table = tf.cast(self.position_table, w.dtype)
        x = tf.broadcast_to(table[None], (tf.shape(w)[0], *self.position_table.shape))
        hidden = []
        for block in self.blocks:
            x = block(x, w, rope=self.rope)
            hidden.append(x)
        levels, total = [], 0.0
        for head, index in zip(self.output_heads, self.head_blocks):
            output = tf.cast(head(hidden[index], w), tf.float32)
            total = total + unpatchify(output, self.patch_size, self.output_channels)
            levels.append(total)
        return {"latent": levels[-1], "levels": levels, "w": w, "hidden": x}

    def levels(self, z, labels, truncation_psi=0.0, guidance_scale=1.0, training=None):
        """The four accumulated levels [B, R, R, c], shallow to deep (stack_levels() makes D's input)."""
        return self.forward_with_features(z, labels, truncation_psi, guidance_scale, training)["levels"]

    def call(self, z, labels, truncation_psi=0.0, guidance_scale=1.0, training=None):
        return self.forward_with_features(z, labels, truncation_psi, guidance_scale, training)["latent"]

    def update_w_avg(self, w, labels):
        """w_avg[c] <- lerp(mean of w over the batch's samples of class c, w_avg[c], beta) for every class in the
        batch (the official update, done in each G step; classes absent from the batch keep their value).

        Inside strategy.run with several replicas, the per-class sums and counts are summed over replicas first, so
        every replica writes the same value of the global batch into its own copy (see hit.gan.ema)."""
        w = tf.cast(tf.stop_gradient(w), tf.float32)
        labels = tf.cast(labels, tf.int32)
        sums = tf.math.unsorted_segment_sum(w, labels, self.num_classes)
        counts = tf.math.unsorted_segment_sum(tf.ones_like(labels, tf.float32), labels, self.num_classes)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            sums, counts = context.all_reduce(tf.distribute.ReduceOp.SUM, [sums, counts])
        means = sums / tf.maximum(counts, 1.0)[:, None]
        old = self.w_avg.value
        new = means + self.w_avg_beta * (old - means)
        self.w_avg.assign(tf.where(counts[:, None] > 0, new, old))

    def symbolic_input_shapes(self, batch_size):
        return None  # every variable follows from the configuration: build() makes them

    def build(self, z_shape=None, labels_shape=None):
        """Create every variable from the configuration (the input shapes are fixed by it)."""
        del z_shape, labels_shape
        tokens = (None, self.grid * self.grid, self.width)
        self.class_embedding.build((None,))
        self.mapping_layers[0].build((None, 2 * self.latent_dim))
        self.mapping_layers[1].build((None, self.width))
        for layer in self.blocks + self.output_heads:
            layer.build(tokens)

    def parameter_counts(self):
        """{"generator": trainable parameters} (w_avg is not trainable)."""
        return {"generator": count_parameters(self.trainable_variables)}

    def get_config(self):
        return {**super().get_config(), **self._config}
