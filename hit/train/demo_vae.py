"""A small KL autoencoder (SD-VAE's architecture, demo widths) trained on Fashion-MNIST: the latent space of the
offline latent-space demo (tools/train_demo_vae.py writes it as an SD-VAE .safetensors file).

The loss is ldm's AutoencoderKL loss (ldm/models/autoencoder.py AutoencoderKL, ldm/modules/losses/contperceptual.py
LPIPSWithDiscriminator) without its LPIPS and GAN terms and with its learned log-variance left at 0:

    loss = sum over pixels of |x - decode(z)| (or its square), z = mean + std * eps sampled from the posterior,
           + kl_weight * KL(N(mean, std^2) || N(0, I)) summed over the latent, both averaged over the batch,

trained with Adam. The latent scale factor is then measured as LDM does (ldm/models/diffusion/ddpm.py
LatentDiffusion.on_train_batch_start, scale_by_std): 1 / std of posterior samples of training images.

Quality is the test split's PSNR of reconstructions through the posterior mean, clipped to [-1, 1]: per image
10 * log10(4 / MSE) on [-1, 1] images (PSNR on [0, 1] images), averaged over the images.
"""

import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from hit.data import fashion_mnist
from hit.models.sd_vae import SDVAE

# Demo widths: 32 x 32 x 1 images -> 8 x 8 x 4 latents (f4), 4 times fewer numbers than pixels. Widths 16, 32, 32:
# on two CPU cores convolutions this narrow are overhead-bound (widths 32, 64, 128 take 2.4x the time per step).
DEMO_CONFIG = dict(channels=16, channel_multipliers=(1, 2, 2), num_res_blocks=1, latent_channels=4, groups=8,
                   image_channels=1)
LOSSES = ("l1", "l2")
LATENT_STD_IMAGES = 10_000  # the scale factor is measured on the first 10k training images


def to_float(images):
    """uint8 images -> float32 in [-1, 1] (EDM2 / REPA: x / 127.5 - 1)."""
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def kl_divergence(mean, std):
    """ldm's DiagonalGaussianDistribution.kl against N(0, I), summed over all but the batch axis: [B]."""
    return 0.5 * tf.reduce_sum(tf.square(mean) + tf.square(std) - 1.0 - 2.0 * tf.math.log(std), axis=[1, 2, 3])


def vae_loss(vae, images, seed, kl_weight=1e-6, reconstruction="l1"):
    """(loss, reconstruction term, KL term) of a batch of images in [-1, 1], decoded from a posterior sample
    (eps ~ N(0, I) drawn statelessly from the [2] int seed)."""
    mean, std = vae.encode(images)
    z = mean + std * tf.random.stateless_normal(tf.shape(mean), seed)
    error = vae.decode(z * vae.scale_factor) - images
    pixels = tf.abs(error) if reconstruction == "l1" else tf.square(error)
    rec = tf.reduce_mean(tf.reduce_sum(pixels, axis=[1, 2, 3]))
    kl = tf.reduce_mean(kl_divergence(mean, std))
    return rec + kl_weight * kl, rec, kl


def train_vae(vae, images, steps, batch_size=64, learning_rate=1e-3, kl_weight=1e-6, reconstruction="l1", seed=0,
              jit_compile=False, log_every=500):
    """Adam steps on uint8 images [N, H, W, C] (shuffled, one permutation per epoch; NumPy seeded by `seed`)
    -> the losses of every step, float32 [steps]. A cosine decay to 0 of the learning rate over the steps.
    jit_compile: XLA compiles the step (on two CPU cores as fast as TensorFlow's kernels, 4x slower to compile)."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps} and {batch_size}")
    if reconstruction not in LOSSES:
        raise ValueError(f"unknown reconstruction loss {reconstruction!r}; expected one of {LOSSES}")
    if len(images) < batch_size:
        raise ValueError(f"need at least batch_size = {batch_size} images, got {len(images)}")
    vae.build_symbolic()
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    optimizer = keras.optimizers.Adam(schedule)
    optimizer.build(vae.trainable_variables)

    @tf.function(jit_compile=jit_compile)
    def train_step(batch, step_seed):
        with tf.GradientTape() as tape:
            loss, _, _ = vae_loss(vae, to_float(batch), step_seed, kl_weight, reconstruction)
        optimizer.apply(tape.gradient(loss, vae.trainable_variables), vae.trainable_variables)
        return loss

    rng = np.random.default_rng(seed)
    order, losses = np.zeros([0], np.int64), []
    for step in range(steps):
        if len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(len(images))])
        indices, order = order[:batch_size], order[batch_size:]
        losses.append(train_step(images[indices], tf.constant([seed, step], tf.int64)))
        if log_every and (step + 1) % log_every == 0:
            logging.info("demo VAE step %d/%d: loss %.2f", step + 1, steps, float(losses[-1]))
    return np.array([float(loss) for loss in losses], np.float32)


def reconstruction_psnr(vae, images, batch_size=500):
    """Per-image PSNR (dB, on [0, 1] images) of reconstructions through the posterior mean, clipped: [N]."""
    reconstruct = tf.function(lambda x: tf.clip_by_value(vae(x), -1.0, 1.0))
    psnr = []
    for start in range(0, len(images), batch_size):
        x = to_float(images[start:start + batch_size])
        mse = tf.reduce_mean(tf.square(reconstruct(x) - x), axis=[1, 2, 3])
        psnr.append((10.0 * tf.math.log(4.0 / tf.maximum(mse, 1e-10)) / tf.math.log(10.0)).numpy())
    return np.concatenate(psnr)


def latent_std(vae, images, seed=0, batch_size=500):
    """The std of posterior samples (z = mean + std * eps, unscaled) over `images`: scale_factor = 1 / it."""
    encode = tf.function(vae.encode)
    total, total_sq, count = 0.0, 0.0, 0
    for start in range(0, len(images), batch_size):
        mean, std = encode(to_float(images[start:start + batch_size]))
        z = (mean + std * tf.random.stateless_normal(tf.shape(mean), [seed, start])).numpy().astype(np.float64)
        total, total_sq, count = total + z.sum(), total_sq + np.square(z).sum(), count + z.size
    return float(np.sqrt(total_sq / count - (total / count) ** 2))


def train_demo_vae(steps, batch_size=64, learning_rate=1e-3, kl_weight=1e-6, reconstruction="l1", seed=0,
                   data_dir=None, jit_compile=False, **config):
    """Trains a demo VAE (SDVAE(32, **DEMO_CONFIG | config)) on the Fashion-MNIST train split; sets its
    scale_factor to 1 / std of its training latents. -> (vae, info): info holds the settings, "test_psnr" (mean
    over the 10k test images), "train_seconds", "steps_per_second", "latent_std", "scale_factor", "parameters".
    data_dir: the folder holding the IDX files (default Debian's)."""
    directory = data_dir or fashion_mnist.DEBIAN_DIR
    images, _ = fashion_mnist.load_arrays("train", directory)
    test_images, _ = fashion_mnist.load_arrays("test", directory)
    config = {**DEMO_CONFIG, **config}
    if config["image_channels"] != images.shape[-1]:
        raise ValueError(f"image_channels must be {images.shape[-1]} for Fashion-MNIST, got {config['image_channels']}")
    keras.utils.set_random_seed(seed)
    vae = SDVAE(images.shape[1], **config).build_symbolic()
    start = time.perf_counter()
    losses = train_vae(vae, images, steps, batch_size, learning_rate, kl_weight, reconstruction, seed, jit_compile)
    seconds = time.perf_counter() - start
    std = latent_std(vae, images[:LATENT_STD_IMAGES], seed)
    vae.scale_factor = 1.0 / std
    info = {"steps": steps, "batch_size": batch_size, "learning_rate": learning_rate, "kl_weight": kl_weight,
            "reconstruction": reconstruction, "seed": seed, "final_loss": float(np.mean(losses[-50:])),
            "train_seconds": round(seconds, 1), "steps_per_second": round(steps / seconds, 2),
            "test_psnr": float(np.mean(reconstruction_psnr(vae, test_images))), "latent_std": std,
            "scale_factor": vae.scale_factor, "parameters": int(sum(np.prod(v.shape) for v in vae.trainable_variables))}
    return vae, info
