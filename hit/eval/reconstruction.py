"""Reconstruction metrics of an autoencoder (VQ-HiT): per-image PSNR and SSIM, and what counts as an autoencoder."""

import tensorflow as tf

# tf.image.psnr is inf for identical images; each image's PSNR is capped here so that the mean, TensorBoard and
# the JSON files (json.dumps(inf) writes Infinity, which is not JSON) stay finite. 100 dB is an RMS error of
# 2e-5 on [-1, 1], far below uint8 rounding (at most ~59 dB): only an exact copy reaches it.
PSNR_CAP_DB = 100.0


def is_autoencoder(model):
    """Duck typing: a model with encode and decode methods (VQ-HiT) is evaluated by reconstruction."""
    return callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None))


def reconstruction_quality(inputs, reconstructions):
    """Per-image (PSNR capped at PSNR_CAP_DB, SSIM) of [-1, 1] images [B, H, W, C]. Both are computed on the images
    mapped to [0, 1] with max_val 1, equal to max_val 255 on [0, 255] images (the usual convention) up to uint8
    rounding. PSNR is the same as max_val 2 on [-1, 1]; SSIM is not (its luminance term is not shift-invariant)."""
    a, b = (tf.cast(x, tf.float32) * 0.5 + 0.5 for x in (inputs, reconstructions))
    return tf.minimum(tf.image.psnr(a, b, max_val=1.0), PSNR_CAP_DB), tf.image.ssim(a, b, max_val=1.0)
