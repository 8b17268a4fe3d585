"""The SD-VAE latent space's two conventions that latent data sets and GAT's runs rely on, without the VAE model:
the scale factor (SD's by default; a VAE of one's own carries its own, hit.models.sd_vae.SDVAE.scale_factor) and
the scaled posterior sample (ldm's DiagonalGaussianDistribution.sample, then * scale)."""

import math
import numbers

import tensorflow as tf

from hit.core.seeds import stateless_normal

SCALE_FACTOR = 0.18215  # SD-1.x / 2.x latent scale: the diffusion model sees z * 0.18215 (bias 0)


def check_scale_factor(scale_factor, what="scale_factor"):
    """The scale factor as a float; a one-line ValueError naming `what` unless it is a positive finite number."""
    if isinstance(scale_factor, bool) or not isinstance(scale_factor, numbers.Real) or not (
            0 < scale_factor < math.inf):
        raise ValueError(f"{what} must be a positive number, got {scale_factor!r}")
    return float(scale_factor)


def sample_latents(mean, std, seed, scale_factor=SCALE_FACTOR):
    """Scaled posterior sample (mean + std * eps) * scale_factor, eps ~ N(0, I) drawn statelessly from `seed`:
    an int, or a [2] int seed such as hit.core.seeds.stateless_seed(...) gives. scale_factor: the VAE's (SD's
    0.18215 by default)."""
    seed = tf.convert_to_tensor(seed, tf.int64)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, tf.zeros_like(seed)])
    mean, std = tf.convert_to_tensor(mean), tf.convert_to_tensor(std)
    eps = tf.reshape(tf.cast(stateless_normal([tf.size(mean)], seed), mean.dtype), tf.shape(mean))
    return (mean + std * eps) * scale_factor
