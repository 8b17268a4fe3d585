"""The SD-VAE latent space's two conventions that latent data sets and GAT's runs rely on, without the VAE model:
the scale factor and the scaled posterior sample (ldm's DiagonalGaussianDistribution.sample, then * scale)."""

import tensorflow as tf

from hit.core.seeds import stateless_normal

SCALE_FACTOR = 0.18215  # SD-1.x / 2.x latent scale: the diffusion model sees z * 0.18215 (bias 0)


def sample_latents(mean, std, seed):
    """Scaled posterior sample (mean + std * eps) * SCALE_FACTOR, eps ~ N(0, I) drawn statelessly from `seed`:
    an int, or a [2] int seed such as hit.core.seeds.stateless_seed(...) gives."""
    seed = tf.convert_to_tensor(seed, tf.int64)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, tf.zeros_like(seed)])
    mean, std = tf.convert_to_tensor(mean), tf.convert_to_tensor(std)
    eps = tf.reshape(tf.cast(stateless_normal([tf.size(mean)], seed), mean.dtype), tf.shape(mean))
    return (mean + std * eps) * SCALE_FACTOR
