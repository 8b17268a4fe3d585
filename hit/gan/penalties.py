"""Discriminator regularisers: the R1 gradient penalty (paper eq. (2)), bCR (Sec. 4.2; official hit-gan
trainers/gan_trainer.py) and GAT's finite-difference approximations of R1 and R2 (official GAT
losses/Rp_PT_loss.py `approximated_gradient_penalty`)."""

import tensorflow as tf


def r1_penalty(discriminator, real_images, loss_scale=None):
    """(logits, penalty): D(x) and mean_b sum_{h,w,c} (dD(x)/dx)^2, from one forward pass.

    The official code weights this by 10 with no 1/2 factor (gamma = 20 in StyleGAN2's notation); the weight
    is applied by the caller. The logits come from the same forward pass, so the D loss on reals and the
    penalty share it; a caller holding an outer tape gets the double backward through D. loss_scale (float16
    training): the gradient is taken of loss_scale * sum D(x), through D in float16 without underflow, and
    divided back in float32.
    """
    with tf.GradientTape() as tape:
        tape.watch(real_images)
        logits = discriminator(real_images, training=True)
        total = tf.reduce_sum(logits)  # inside the tape: per-sample gradients of a sum are the samples' own
        if loss_scale is not None:
            total = total * loss_scale
    gradients = tape.gradient(total, real_images)
    if loss_scale is not None:
        gradients = tf.cast(gradients, tf.float32) / loss_scale
    penalty = tf.reduce_mean(tf.reduce_sum(tf.square(gradients), axis=[1, 2, 3]))
    return logits, penalty


def consistency_loss(discriminator, real_images, fake_images, real_logits, fake_logits, augment):
    """bCR: ||D(x) - D(T(x))||^2 + ||D(G(z)) - D(T(G(z)))||^2, batch means (Zhao et al. 2020; hit-gan
    trainers/gan_trainer.py).

    T is `augment(images) -> augmented images` with independent draws per sample. The augmented images are
    stop-gradient'ed (nothing reaches G through bCR); D runs once on [T(x); T(G(z))]; both sides of each MSE
    carry gradients into D. Add the result to the D loss only.
    """
    batch = real_images.shape[0]
    augmented = tf.stop_gradient(augment(tf.concat([real_images, fake_images], axis=0)))
    augmented_logits = discriminator(augmented, training=True)
    real_term = tf.reduce_mean(tf.square(real_logits - augmented_logits[:batch]))
    fake_term = tf.reduce_mean(tf.square(fake_logits - augmented_logits[batch:]))
    return real_term + fake_term


def approximate_gradient_penalty(logits, perturbed_logits, sigma=0.01):
    """aR1 / aR2 (official GAT `RpGANPTLoss.approximated_gradient_penalty`): mean ((D(x~) - D(x~')) / sigma)^2,
    x~' built from the clean input plus N(0, sigma^2) with the same augmentation and MNG noise. Since
    E[(eps . grad D)^2] = |grad D|^2 for eps ~ N(0, I), it estimates R1 (reals) or R2 (fakes) without a double
    backward. Computed in float32 (the difference is divided by sigma^2 = 1e-4); gradients flow through both logits."""
    difference = tf.cast(logits, tf.float32) - tf.cast(perturbed_logits, tf.float32)
    return tf.reduce_mean(tf.square(difference / sigma))
