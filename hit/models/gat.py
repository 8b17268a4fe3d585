"""GAT ("Scalable GANs with Transformers", Hyun et al.): generator and discriminator in Keras 3, NHWC (facts 2, 9).

Generator G(z, labels) -> latent [B, R, R, c] (R = 32, c = 4: an SD-VAE latent; the demo: 32 x 32 x 1 pixels)

    mapping   w = EqualLinear(SiLU(EqualLinear([n(e(c)), n(z)])))     e: Embedding(classes, 64) N(0, 0.02);
              n(x) = x * rsqrt(mean(x^2) + 1e-8); the class half comes first; both EqualLinear lr 0.01 (facts 2.2)
    tokens    h = the fixed 2-D sin-cos table [(R/p)^2, C] (the official input latent and patch-embedding conv are
              multiplied by 0: left out)
    blocks    (s_a, g_a, s_m, g_m) = Linear(SiLU(w)), 4C, split in that order, xavier gain 0.1, bias 0
              h = h + g_a * Attn(RMSNorm(h) * (1 + s_a));  h = h + g_m * SwiGLU(RMSNorm(h) * (1 + s_m))
              RMSNorm without affine, eps 1e-6; Attn: hit.layers.self_attention with 2-D RoPE
    heads     head k reads block (k + 1) * depth/4 - 1: o_k = Linear(RMSNorm(h) * (1 + Linear(SiLU(w)))) -> p*p*c per
              token, unpatchified; levels x_k = o_1 + ... + o_k (shallow to deep); the latent is x_4

Discriminator D(stacked, labels) -> logits [B] (one per sample, float32)

    stacked   the four levels concatenated on channels [B, R, R, 4c], channel = 4 * level + c, shallow first
    tokens    PatchEmbed conv (kernel = stride = p) 4c -> C, + the fixed sin-cos table, a [cls] token N(0, 0.02) first
    blocks    h = h + g1 * Attn(RMSNorm(h));  h = h + g2 * SwiGLU(RMSNorm(h)), RMSNorm with a scale (eps 1e-6),
              LayerScale g1, g2 per channel from 0.1; RoPE turns the spatial tokens only
    logit     <Linear_{C -> 2048}(RMSNorm(h_cls)), e(c)>,  e = EqualLinear(SiLU(EqualLinear(Embedding(c)))), lr 0.01
    REPA      (repa=True) projector C -> 2048 -> 2048 -> 768 with SiLU, on the last block's cls and patch tokens as
              they are (no final norm, as the official forward), for the alignment to DINOv2 (facts 2.3, 5.5)

Trainable parameters equal the official models' (facts 2.1; excluding the fixed tables, and for G the unused
patch-embedding conv of c p^2 C + C): GAT-S/2 G 29,256,512, D 32,556,160 + REPA projector 6,558,464. The official D
returns logits [B, 1]; ours are [B].

Weights: `load_official_weights(model, path)` reads the state dict of the official PyTorch model
(github.com/hse1032/GAT, models/generator.py `GAT` and models/discriminator.py `GATD`) saved as .safetensors,
e.g. from a training checkpoint: safetensors.torch.save_file(ckpt["ema"], "g.safetensors") (or "generator",
"discriminator"). `official_weight_map` names the tensors.
"""

import keras
import numpy as np
import safetensors.numpy
import tensorflow as tf

from hit.layers.equal_linear import EqualLinear
from hit.layers.mlp import SwiGLU, swiglu_hidden_dim
from hit.layers.normalization import RMS_NORM_EPSILON, rms_norm, rms_norm_layer
from hit.layers.patches import patch_embedding, unpatchify
from hit.layers.rope import Rotary2D, rope_2d_tables, sincos_2d_table
from hit.layers.self_attention import SelfAttention

NUM_LEVELS = 4  # output heads of G = levels D sees (facts 2.2, 4)
MAPPING_LR_MULTIPLIER = 0.01  # EqualLinear of G's mapping network and D's class embedding (facts 2.2, 2.3)
MODULATION_GAIN = 0.1  # xavier gain of every modulation Linear (facts 2.2, 5.7)
SECOND_MOMENT_EPSILON = 1e-8  # normalize_2nd_moment of z and the class embedding (facts 2.2)
EMBEDDING_STDDEV = 0.02  # class embeddings and D's [cls] token (facts 2.2, 2.3)
W_AVG_BETA = 0.995  # per-class running mean of w (facts 2.2)


def xavier_uniform(gain=1.0):
    """torch's xavier_uniform_(gain): U(+-gain * sqrt(6 / (fan_in + fan_out)))."""
    return keras.initializers.VarianceScaling(gain ** 2, mode="fan_avg", distribution="uniform")


def dense(units, name, gain=1.0):
    """nn.Linear initialised as the official initialize_weights: xavier-uniform (gain), zero bias."""
    return keras.layers.Dense(units, kernel_initializer=xavier_uniform(gain), name=name)


def class_embedding(num_classes, dim, name):
    return keras.layers.Embedding(num_classes, dim, embeddings_initializer=keras.initializers.RandomNormal(
        stddev=EMBEDDING_STDDEV), name=name)


def count_parameters(variables):
    """Elements of `variables` (from their shapes: works for variables whose values are not drawn yet)."""
    return int(sum(np.prod(v.shape, dtype=np.int64) for v in variables))


def stack_levels(levels):
    """The four levels [B, R, R, c] (shallow to deep) -> D's input [B, R, R, 4c], channel = 4 * level + c."""
    return tf.concat(list(levels), axis=-1)


def validate_config(kind, resolution, patch_size, channels, width, depth, heads, num_classes):
    """One-line ValueErrors for every GAT configuration that cannot build."""
    sizes = dict(resolution=resolution, patch_size=patch_size, channels=channels, width=width, depth=depth,
                 heads=heads, num_classes=num_classes)
    bad = {k: v for k, v in sizes.items() if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1}
    if bad:
        raise ValueError(f"bad GAT {kind} config: {bad} must be positive integers")
    if resolution % patch_size:
        raise ValueError(f"bad resolution: patch size {patch_size} does not divide the {resolution}x{resolution} "
                         f"input of the GAT {kind}")
    if width % heads:
        raise ValueError(f"bad heads: {heads} heads do not divide width {width} in the GAT {kind}")
    if (width // heads) % 4:
        raise ValueError(f"bad heads: 2-D RoPE needs a head dim divisible by 4, got {width // heads} "
                         f"(width {width} / {heads} heads) in the GAT {kind}")
    if kind == "generator" and depth % NUM_LEVELS:
        raise ValueError(f"bad depth: the GAT generator's {NUM_LEVELS} output heads read every depth/{NUM_LEVELS} "
                         f"blocks, so depth must be divisible by {NUM_LEVELS}, got {depth}")


def _static_shape(x):
    return list(getattr(x, "shape", np.shape(x)))


def _check_labels(name, labels, batch):
    shape = _static_shape(labels)
    if len(shape) != 1 or (batch is not None and shape[0] is not None and shape[0] != batch):
        raise ValueError(f"{name} expects integer labels of shape [batch] = [{batch}], got {shape}")


# ---- generator ---------------------------------------------------------------------------------------------------


class GeneratorBlock(keras.layers.Layer):
    """GATBlock (facts 2.2): adaptive RMSNorm (scale only) and gated residuals from w."""

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
    """FinalLayer (facts 2.2): Linear(RMSNorm(h) * (1 + Linear(SiLU(w)))) -> p*p*c values per token."""

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


class BuiltFromConfig:
    """GAT's models create every variable from their configuration (the input shapes are fixed by it)."""

    def build_symbolic(self, batch_size=1):
        """Create every variable (build(); no tracing, no computation). Returns the model."""
        del batch_size  # kept for the interface of the other models
        if not self.built:
            self.build()
        return self


class GATGenerator(BuiltFromConfig, keras.Model):
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


# ---- discriminator -----------------------------------------------------------------------------------------------


class DiscriminatorBlock(keras.layers.Layer):
    """D's ViT block (facts 2.3): pre-RMSNorm (with a scale) residuals, LayerScale per channel from 0.1."""

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


class GATDiscriminator(BuiltFromConfig, keras.Model):
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


# ---- official weights ----------------------------------------------------------------------------------------------

LINEAR, CONV = (1, 0), (2, 3, 1, 0)  # Linear [out, in] -> [in, out]; Conv2d OIHW -> HWIO


def _linear(prefix, layer):
    return {f"{prefix}.weight": (layer.kernel, LINEAR), f"{prefix}.bias": (layer.bias, None)}


def _attention_and_mlp(prefix, block):
    attn = block.attn
    return {**_linear(f"{prefix}.attn.qkv", attn.qkv), f"{prefix}.attn.q_norm.weight": (attn.q_norm.scale, None),
            f"{prefix}.attn.k_norm.weight": (attn.k_norm.scale, None), **_linear(f"{prefix}.attn.proj", attn.proj),
            **_linear(f"{prefix}.mlp.w12", block.mlp.w12), **_linear(f"{prefix}.mlp.w3", block.mlp.w3)}


def official_weight_map(model):
    """{official state-dict name: (variable, axes permutation from the file's layout or None)}, every variable of a
    built GATGenerator / GATDiscriminator exactly once. Names from github.com/hse1032/GAT models/*.py."""
    if isinstance(model, GATGenerator):
        names = {"y_embedder.embedding_table.weight": (model.class_embedding.embeddings, None),
                 **_linear("latent_embedder.0", model.mapping_layers[0]),
                 **_linear("latent_embedder.2", model.mapping_layers[1]),
                 "w_avg": (model.w_avg, None)}
        for i, block in enumerate(model.blocks):
            names.update({**_attention_and_mlp(f"blocks.{i}", block),
                          **_linear(f"blocks.{i}.adaLN_modulation.1", block.modulation)})
        for k, head in enumerate(model.output_heads):
            names.update({**_linear(f"final_layers.{k}.adaLN_modulation.1", head.modulation),
                          **_linear(f"final_layers.{k}.linear", head.linear)})
    elif isinstance(model, GATDiscriminator):
        names = {"x_embedder.proj.weight": (model.patch_embed.kernel, CONV),
                 "x_embedder.proj.bias": (model.patch_embed.bias, None),
                 "cls_token": (model.cls_token, None),
                 "final_layer.0.weight": (model.final_norm.scale, None),
                 **_linear("final_layer.1", model.final_linear),
                 "y_embedder.embedding_table.weight": (model.class_embedding.embeddings, None),
                 **_linear("y_embedder.latent_embedder.0", model.class_mapping[0]),
                 **_linear("y_embedder.latent_embedder.2", model.class_mapping[1])}
        for i, block in enumerate(model.blocks):
            names.update({**_attention_and_mlp(f"blocks.{i}", block),
                          f"blocks.{i}.norm1.weight": (block.norm1.scale, None),
                          f"blocks.{i}.norm2.weight": (block.norm2.scale, None),
                          f"blocks.{i}.ls_attn": (block.ls_attn, None), f"blocks.{i}.ls_mlp": (block.ls_mlp, None)})
        if model.repa_projector is not None:
            for j, layer in enumerate(model.repa_projector.linears):
                names.update(_linear(f"proj.{2 * j}", layer))
    else:
        raise ValueError(f"official GAT weights load into a GATGenerator or GATDiscriminator, not "
                         f"{type(model).__name__}")
    mapped = sorted(id(v) for v, _ in names.values())
    if mapped != sorted(id(v) for v in model.weights):
        raise ValueError(f"GAT weight map covers {len(mapped)} tensors but {model.name} has {len(model.weights)} "
                         f"weights (build the model first: build_symbolic())")
    return names


def official_unused_tensors(model):
    """{official name: (shape, expected value or None)} of the state-dict tensors that the Keras model has no weight
    for, checked and skipped by the loader: the fixed sin-cos table `pos_embed` and the RoPE buffers
    `feat_rope.freqs_cos` / `freqs_sin` (their values must match ours), and in G the patch-embedding conv
    `x_embedder.proj` whose output the official forward multiplies by 0 (any value)."""
    tokens, head_dim = model.grid * model.grid, model.rope.head_dim
    cos, sin = rope_2d_tables(head_dim, model.grid)
    unused = {"pos_embed": ((1, tokens, model.width), model.position_table[None]),
              "feat_rope.freqs_cos": ((tokens, head_dim), cos), "feat_rope.freqs_sin": ((tokens, head_dim), sin)}
    if isinstance(model, GATGenerator):
        p = model.patch_size
        unused["x_embedder.proj.weight"] = ((model.width, model.output_channels, p, p), None)
        unused["x_embedder.proj.bias"] = ((model.width,), None)
    return unused


def file_shape(variable, perm):
    """The shape a variable has in the official file."""
    shape = tuple(variable.shape)
    return shape if perm is None else tuple(shape[i] for i in np.argsort(perm))


def _names(names, limit=5):
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


FIXED_TOLERANCE = 1e-4  # float32 tables computed by torch and NumPy differ by ~1e-6


def load_weights(model, tensors, source="GAT weights"):
    """Fill every weight of a GAT model from {official name: array}; every tensor must be used exactly once (the
    unused ones of official_unused_tensors explicitly), else a one-line ValueError naming the culprits."""
    model.build_symbolic()
    targets, unused = official_weight_map(model), official_unused_tensors(model)
    expected = set(targets) | set(unused)
    missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing:
        raise ValueError(f"{source}: missing {len(missing)} tensor(s): {_names(missing)}")
    if extra:
        hint = ""
        if isinstance(model, GATDiscriminator) and model.repa_projector is None and any(
                n.startswith("proj.") for n in extra):
            hint = " (the file has a REPA projector: build the discriminator with repa=True)"
        raise ValueError(f"{source}: {len(extra)} unexpected tensor(s): {_names(extra)}{hint}")
    shapes = {**{n: file_shape(v, perm) for n, (v, perm) in targets.items()}, **{n: s for n, (s, _) in unused.items()}}
    wrong = sorted(n for n, shape in shapes.items() if tuple(tensors[n].shape) != shape)
    if wrong:
        details = "; ".join(f"{n!r} expected {shapes[n]}, got {tuple(tensors[n].shape)}" for n in wrong[:3])
        raise ValueError(f"{source}: {len(wrong)} tensor(s) of the wrong shape: {details}"
                         + (f"; ... ({len(wrong) - 3} more)" if len(wrong) > 3 else ""))
    for name, (_, value) in sorted(unused.items()):
        if value is not None:
            difference = float(np.max(np.abs(np.asarray(tensors[name], np.float64) - value)))
            if not difference <= FIXED_TOLERANCE:
                raise ValueError(f"{source}: {name!r} differs from this model's fixed table by up to {difference:.3g} "
                                 f"(a different position-encoding convention or grid)")
    for name, (variable, perm) in targets.items():
        value = np.asarray(tensors[name])
        variable.assign((value if perm is None else np.transpose(value, perm)).astype(np.float32))
    return model


def load_official_weights(model, path):
    """Load the official PyTorch GAT generator / discriminator state dict from a .safetensors file into `model`
    (a GATGenerator or GATDiscriminator of the same configuration; built here if it is not). Returns the model.
    The file's tensors must be float32 or float16 (NumPy cannot read bfloat16)."""
    try:
        tensors = safetensors.numpy.load_file(str(path))
    except Exception as error:  # noqa: BLE001 (a missing file, not safetensors, bfloat16: one line for all)
        message = " ".join(str(error).split())
        raise ValueError(f"cannot read GAT weights {path}: {type(error).__name__}: {message}") from error
    return load_weights(model, tensors, source=str(path))
