"""Adversarial losses as pure functions of the discriminator's logits (paper A.4 eqs. (2)-(3); official GAT
losses/Rp_PT_loss.py)."""

import tensorflow as tf

LOSS_TYPES = ("non_saturating", "hinge")


def _check(loss_type):
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown GAN loss {loss_type!r}; expected one of {LOSS_TYPES}")


def discriminator_loss(real_logits, fake_logits, loss_type="non_saturating"):
    """Eq. (2) without R1: mean softplus(-D(x)) + mean softplus(D(G(z))); hinge: relu(1 - .) + relu(1 + .)."""
    _check(loss_type)
    if loss_type == "hinge":
        return tf.reduce_mean(tf.nn.relu(1.0 - real_logits)) + tf.reduce_mean(tf.nn.relu(1.0 + fake_logits))
    return tf.reduce_mean(tf.nn.softplus(-real_logits)) + tf.reduce_mean(tf.nn.softplus(fake_logits))


def generator_loss(fake_logits, loss_type="non_saturating"):
    """Eq. (3): mean softplus(-D(G(z))), the non-saturating loss; hinge: -mean D(G(z))."""
    _check(loss_type)
    if loss_type == "hinge":
        return -tf.reduce_mean(fake_logits)
    return tf.reduce_mean(tf.nn.softplus(-fake_logits))


def relativistic_discriminator_loss(real_logits, fake_logits):
    """RpGAN (official GAT `RpGANPTLoss`, as R3GAN): mean softplus(-(D(x) - D(G(z)))), reals and fakes paired by
    index."""
    return tf.reduce_mean(tf.nn.softplus(-(real_logits - fake_logits)))


def relativistic_generator_loss(real_logits, fake_logits):
    """RpGAN's G side: mean softplus(-(D(G(z)) - D(x))); the caller stops the gradient through D(x)."""
    return tf.reduce_mean(tf.nn.softplus(-(fake_logits - real_logits)))
