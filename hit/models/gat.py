"""GAT ("Scalable GANs with Transformers", Hyun et al.): what its generator (gat_generator.py) and discriminator
(gat_discriminator.py) share: constants, initialisers, configuration checks and D's input layout (official GAT
models/generator.py `GAT`, models/discriminator.py `GATD`).


G(z, labels) -> a latent [B, R, R, c] in four levels (gat_generator.py); D(the levels stacked on channels,
labels) -> logits [B] (gat_discriminator.py).

Trainable parameters equal the official models' (tests/test_gat_models.py; excluding the fixed tables, and for G
the unused patch-embedding conv of c p^2 C + C): GAT-S/2 G 29,256,512, D 32,556,160 + REPA projector 6,558,464.
The official D returns logits [B, 1]; ours are [B]. The official weights load through
hit.models.weights.gat_official.
"""

import keras
import numpy as np
import tensorflow as tf

NUM_LEVELS = 4  # output heads of G = levels D sees (official `GAT.final_layers`, losses/Rp_PT_loss.py)
MAPPING_LR_MULTIPLIER = 0.01  # EqualLinear of G's mapping network and D's class embedding (official models/)
MODULATION_GAIN = 0.1  # xavier gain of every modulation Linear (official `GAT.initialize_weights`)
SECOND_MOMENT_EPSILON = 1e-8  # normalize_2nd_moment of z and the class embedding (official models/generator.py)
EMBEDDING_STDDEV = 0.02  # class embeddings and D's [cls] token (official `initialize_weights`, `GATD`)
W_AVG_BETA = 0.995  # per-class running mean of w (official `GAT.w_avg_beta`)


def xavier_uniform(gain=1.0):
    """torch's xavier_uniform_(gain): U(+-gain * sqrt(6 / (fan_in + fan_out)))."""
    return keras.initializers.VarianceScaling(gain ** 2, mode="fan_avg", distribution="uniform")


def dense(units, name, gain=1.0):
    """nn.Linear initialised as the official initialize_weights: xavier-uniform (gain), zero bias."""
    return keras.layers.Dense(units, kernel_initializer=xavier_uniform(gain), name=name)


def class_embedding(num_classes, dim, name):
    return keras.layers.Embedding(num_classes, dim, embeddings_initializer=keras.initializers.RandomNormal(
        stddev=EMBEDDING_STDDEV), name=name)


def stack_levels(levels):
    """The levels, shallow to deep (a list of [B, R, R, c], or [L, B, R, R, c]) -> D's input [B, R, R, L * c],
    channel = level * c + c' (the official torch.cat(levels, dim=1) in NCHW)."""
    if isinstance(levels, (list, tuple)):
        levels = tf.stack(levels)
    num_levels, batch, height, width, channels = levels.shape
    return tf.reshape(tf.transpose(levels, [1, 2, 3, 0, 4]), [batch, height, width, num_levels * channels])


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
