"""Adversarial losses, the R1 penalty (against a one-sample-at-a-time computation) and bCR."""

import numpy as np
import pytest
import tensorflow as tf

from hit.gan import losses, penalties
from hit.models.presets import get_discriminator


def softplus(x):
    return np.log1p(np.exp(x))


def test_non_saturating_and_hinge_losses_match_their_formulas():
    real, fake = np.array([0.5, -1.0, 2.0]), np.array([-0.3, 1.5, 0.0])
    d = losses.discriminator_loss(tf.constant(real), tf.constant(fake)).numpy()
    np.testing.assert_allclose(d, softplus(-real).mean() + softplus(fake).mean(), rtol=1e-6)
    np.testing.assert_allclose(losses.generator_loss(tf.constant(fake)).numpy(), softplus(-fake).mean(), rtol=1e-6)
    d_hinge = losses.discriminator_loss(tf.constant(real), tf.constant(fake), "hinge").numpy()
    np.testing.assert_allclose(d_hinge, np.maximum(0, 1 - real).mean() + np.maximum(0, 1 + fake).mean())
    np.testing.assert_allclose(losses.generator_loss(tf.constant(fake), "hinge").numpy(), -fake.mean())
    with pytest.raises(ValueError, match="unknown GAN loss 'wgan'"):
        losses.generator_loss(tf.constant(fake), "wgan")


def test_r1_equals_per_sample_gradient_norms_computed_one_at_a_time():
    discriminator = get_discriminator("stylegan_d_tiny_32")
    images = tf.random.normal([3, 32, 32, 3])
    logits, penalty = penalties.r1_penalty(discriminator, images)
    norms = []
    for i in range(3):
        single = images[i:i + 1]
        with tf.GradientTape() as tape:
            tape.watch(single)
            out = discriminator(single, training=True)[0]
        norms.append(float(tf.reduce_sum(tape.gradient(out, single) ** 2)))
    np.testing.assert_allclose(penalty.numpy(), np.mean(norms), rtol=1e-5)  # no 1/2 factor (hit-gan utils/losses.py)
    np.testing.assert_allclose(logits.numpy(), discriminator(images).numpy(), rtol=1e-6)
    assert penalty.numpy() > 0


def test_r1_is_differentiable_with_respect_to_the_discriminator():
    discriminator = get_discriminator("stylegan_d_tiny_32")
    images = tf.random.normal([2, 32, 32, 3])
    with tf.GradientTape() as tape:
        _, penalty = penalties.r1_penalty(discriminator, images)
    kernels = [v for v in discriminator.trainable_variables if v.path.endswith("kernel")]
    gradients = tape.gradient(penalty, kernels)
    # Every kernel shapes dD/dx; biases act only through LeakyReLU switching (and the last one not at all).
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in gradients)


def test_bcr_matches_its_formula_and_sends_nothing_through_the_augmented_images():
    discriminator = get_discriminator("stylegan_d_tiny_32")
    real, fake = tf.random.normal([2, 32, 32, 3]), tf.random.normal([2, 32, 32, 3])
    augment = lambda x: x[:, ::-1] * 0.5  # noqa: E731  (any deterministic transform)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(fake)
        real_logits, fake_logits = discriminator(real), discriminator(fake)
        loss = penalties.consistency_loss(discriminator, real, fake, real_logits, fake_logits, augment)
    augmented = discriminator(augment(tf.concat([real, fake], 0))).numpy()
    expected = np.mean((real_logits.numpy() - augmented[:2]) ** 2) + np.mean((fake_logits.numpy() - augmented[2:]) ** 2)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
    # Gradient to the fakes flows only through D(G(z)), never through T(G(z)) (stop-gradient).
    through_fake_logits = tape.gradient(loss, fake_logits)
    direct = tape.gradient(fake_logits, fake, output_gradients=through_fake_logits)
    np.testing.assert_allclose(tape.gradient(loss, fake).numpy(), direct.numpy(), rtol=1e-5, atol=1e-8)
