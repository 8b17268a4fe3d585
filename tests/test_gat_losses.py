"""GAT's training terms (official GAT losses/, train.py): RpGAN, aR1 / aR2 against autodiff gradient norms of a tiny
smooth D, REPA's cosine term and target resizing, AdamW clipping after the replica sum, and the latent
augmentation's options."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from hit.gan import augment, losses, penalties, repa
from hit.models.dinov2 import bicubic_matrix
from hit.train.optimizers import Adam, AdamW


def softplus(x):
    return np.log1p(np.exp(x))


def test_relativistic_pairing_losses():
    real, fake = tf.constant([1.0, -2.0, 0.5]), tf.constant([0.0, 1.0, 0.5])
    np.testing.assert_allclose(losses.relativistic_discriminator_loss(real, fake),
                               np.mean(softplus(-(real - fake))), rtol=1e-6)
    np.testing.assert_allclose(losses.relativistic_generator_loss(real, fake),
                               np.mean(softplus(-(fake - real))), rtol=1e-6)


def tiny_d(x):
    """A smooth scalar function per sample: sum tanh(W x + b) . v."""
    rng = np.random.default_rng(0)
    w = tf.constant(rng.normal(0, 0.5, (12, 6)), tf.float32)
    v = tf.constant(rng.normal(0, 1.0, (6,)), tf.float32)
    return tf.linalg.matvec(tf.tanh(tf.reshape(x, [-1, 12]) @ w + 0.1), v)


def test_finite_difference_penalty_estimates_the_gradient_norm():
    x = tf.constant(np.random.default_rng(1).normal(0, 1, (3, 2, 2, 3)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = tiny_d(x)
        total = tf.reduce_sum(logits)
    exact = tf.reduce_sum(tf.square(tape.gradient(total, x)), axis=[1, 2, 3]).numpy()
    sigma, draws = 0.01, 20_000
    eps = tf.random.stateless_normal([draws, *x.shape], [1, 2])
    # One sample at a time: the mean over the draws is that sample's R1 estimate.
    estimates = [penalties.approximate_gradient_penalty(tf.fill([draws], logits[i]),
                                                        tiny_d(x[i] + sigma * eps[:, i]), sigma) for i in range(3)]
    np.testing.assert_allclose(estimates, exact, rtol=0.05)
    np.testing.assert_allclose(
        penalties.approximate_gradient_penalty(tf.constant([1.0, 2.0]), tf.constant([1.01, 1.98])), 2.5, rtol=1e-4)


def test_repa_term_and_resized_targets():
    rng = np.random.default_rng(2)
    cls, patches = rng.normal(size=(2, 8)), rng.normal(size=(2, 4, 8))
    target_cls, target_patches = rng.normal(size=(2, 8)), rng.normal(size=(2, 4, 8))

    def cos(a, b):
        return np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)

    expected = np.mean((1 - cos(cls, target_cls)) + np.mean(1 - cos(patches, target_patches), axis=1))
    np.testing.assert_allclose(repa.repa_loss(cls, patches, target_cls, target_patches), expected, rtol=1e-5)
    np.testing.assert_allclose(repa.repa_loss(cls, patches, 3 * cls, 2 * patches), 0.0, atol=1e-6)
    # A 16x16 target grid for an 8x8 D grid (patch 4): PyTorch bicubic along rows and columns.
    grid16 = rng.normal(size=(1, 256, 3)).astype(np.float32)
    m = bicubic_matrix(16, 8)
    expected = np.einsum("ih,jw,hwc->ijc", m, m, grid16[0].reshape(16, 16, 3)).reshape(1, 64, 3)
    np.testing.assert_allclose(repa.resize_patch_features(tf.constant(grid16), 8), expected, rtol=1e-5, atol=1e-6)
    flipped = repa.flip_patch_features(tf.constant(grid16)).numpy().reshape(16, 16, 3)
    np.testing.assert_array_equal(flipped, grid16[0].reshape(16, 16, 3)[:, ::-1])


def adamw(clip_norm):
    return AdamW(clip_norm=clip_norm, learning_rate=0.1, beta_1=0.0, beta_2=0.99, epsilon=1e-8, weight_decay=0.0)


def test_adamw_clips_the_replica_sum_like_one_device(two_replicas):
    grads = np.array([[3.0, 4.0, 0.0], [1.0, 0.0, 2.0]], np.float32)  # replica parts; their sum (4, 4, 2) has norm 6

    def second_moments(strategy, parts):
        with strategy.scope():
            variable = tf.Variable(np.ones(3, np.float32))
            optimizer = adamw(1.0)
            optimizer.build([variable])

        @tf.function
        def step():
            def replica():
                part = tf.gather(tf.constant(parts), tf.distribute.get_replica_context().replica_id_in_sync_group)
                optimizer.apply_gradients([(part, variable)])
            strategy.run(replica)

        step()
        return optimizer.variables[-1].numpy()  # the velocity: (1 - 0.99) g^2 of the gradient it applied

    clipped = np.array([4.0, 4.0, 2.0]) / 6.0
    np.testing.assert_allclose(second_moments(two_replicas, grads), 0.01 * clipped ** 2, rtol=1e-5)
    np.testing.assert_allclose(second_moments(tf.distribute.get_strategy(), grads.sum(0, keepdims=True)),
                               0.01 * clipped ** 2, rtol=1e-5)
    with pytest.raises(ValueError, match="use clip_norm"):
        AdamW(global_clipnorm=1.0)


def test_color_probability_and_flip_probability():
    seed = tf.constant([5, 6], tf.int64)
    hit = augment.draw_augment_params(seed, 4000, 32, 32, "color,flip", flip_probability=0.4)
    gat = augment.draw_augment_params(seed, 4000, 32, 32, "color,flip", flip_probability=0.4,
                                      color_probability=0.5)
    assert "color_mask" not in hit and abs(gat["color_mask"].numpy().mean() - 0.5) < 0.03
    for name in ("brightness", "saturation", "contrast", "flip"):  # the coin moves no other draw
        np.testing.assert_array_equal(gat[name], hit[name])
    assert abs(hit["flip"].numpy().mean() - 0.4) < 0.03
    with pytest.raises(ValueError, match="probabilities must be in"):
        augment.draw_augment_params(seed, 4, 32, 32, "color", color_probability=1.5)


@pytest.mark.parametrize("optimizer_class", [Adam, AdamW])
def test_embedding_rows_looked_up_twice_move_by_their_summed_gradient(optimizer_class):
    """A class used twice in a batch: the row's update is that of the dense (summed) gradient, as PyTorch's and
    Keras 2's; Keras 3 alone would use the squares of the two halves in v (hit.train.optimizers)."""
    table = keras.layers.Embedding(4, 3)
    table.build((None,))
    start = table.embeddings.numpy()
    labels = tf.constant([1, 1, 2])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(table(labels) * tf.constant([[1.0, -2.0, 0.5], [3.0, 1.0, 0.5], [1.0, 1.0, 1.0]]))
    grads = tape.gradient(loss, table.trainable_variables)
    assert isinstance(grads[0], tf.IndexedSlices)
    optimizer = optimizer_class(learning_rate=0.1, beta_1=0.0, beta_2=0.99, epsilon=1e-8, weight_decay=0.0)
    optimizer.apply_gradients(zip(grads, table.trainable_variables))
    dense = tf.convert_to_tensor(grads[0]).numpy()  # row 1 = [4, -1, 1]
    epsilon = 1e-7 if optimizer_class is Adam else 1e-8  # Keras' epsilon / sqrt(1 - 0.99) and torch's
    expected = start - 0.1 * dense / (np.abs(dense) + epsilon)
    np.testing.assert_allclose(table.embeddings.numpy(), expected, rtol=1e-6, atol=1e-7)


def test_adamw_adds_epsilon_after_the_bias_correction_as_torch():
    """torch.optim.AdamW: p -= lr / (1 - b1^t) m / (sqrt(v / (1 - b2^t)) + eps); a gradient of 1e-7 at the first
    step moves by lr / 1.1 there, by lr / 2 with Keras' epsilon (1e-8 / sqrt(0.01))."""
    weight = tf.Variable([0.0, 0.0])
    optimizer = AdamW(learning_rate=1.0, beta_1=0.0, beta_2=0.99, epsilon=1e-8, weight_decay=0.0)
    optimizer.apply_gradients([(tf.constant([1e-7, 1.0]), weight)])
    np.testing.assert_allclose(weight.numpy(), [-1e-7 / (1e-7 + 1e-8), -1.0 / (1.0 + 1e-8)], rtol=1e-5)
