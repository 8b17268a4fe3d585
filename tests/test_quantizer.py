"""The vector quantiser (hit.layers.quantizer): nearest codebook rows, straight-through gradients, the VQ-VAE
losses, and codebook usage (perplexity, unused codes) on hand-made assignments."""

import math

import numpy as np
import pytest
import tensorflow as tf

from hit.layers.quantizer import VectorQuantizer, code_counts, code_usage


@pytest.fixture
def quantizer():
    layer = VectorQuantizer(num_codes=16, dim=4, beta=0.25)
    layer.codebook.assign(tf.random.stateless_normal([16, 4], [0, 1]))  # well separated codes
    return layer


def brute_force_codes(z, codebook):
    distances = ((z[..., None, :] - codebook) ** 2).sum(-1)  # [..., K]
    return distances.argmin(-1)


def test_outputs_are_the_nearest_codebook_rows(quantizer):
    z = tf.random.stateless_normal([2, 3, 5, 4], [2, 3])
    z_q, codes, _ = quantizer(z)
    codebook = quantizer.codebook.numpy()
    np.testing.assert_array_equal(codes.numpy(), brute_force_codes(z.numpy(), codebook))
    assert codes.dtype == tf.int32 and codes.shape == (2, 3, 5)
    np.testing.assert_allclose(z_q.numpy(), codebook[codes.numpy()], atol=1e-6)  # z + (e - z) == e up to rounding
    np.testing.assert_array_equal(quantizer.lookup(codes).numpy(), codebook[codes.numpy()])
    assert len(np.unique(codes.numpy())) > 3  # not a degenerate assignment


def test_nearest_codes_are_the_same_under_xla(quantizer):
    z = tf.random.stateless_normal([64, 4], [4, 5])
    compiled = tf.function(quantizer.nearest_codes, jit_compile=True)
    np.testing.assert_array_equal(compiled(z).numpy(), quantizer.nearest_codes(z).numpy())


def test_straight_through_gradient_is_the_identity(quantizer):
    z = tf.random.stateless_normal([3, 4], [6, 7])
    weights = tf.random.stateless_normal([3, 4], [8, 9])
    with tf.GradientTape() as tape:
        tape.watch(z)
        z_q, _, _ = quantizer(z)
        total = tf.reduce_sum(weights * z_q)
    np.testing.assert_allclose(tape.gradient(total, z).numpy(), weights.numpy(), rtol=1e-6)


def test_codebook_and_commitment_losses(quantizer):
    z = tf.random.stateless_normal([2, 3, 4], [10, 11])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        _, codes, losses = quantizer(z)
    e = quantizer.codebook.numpy()[codes.numpy()]
    squared = np.mean((z.numpy() - e) ** 2)
    np.testing.assert_allclose(losses["codebook_loss"].numpy(), squared, rtol=1e-5)
    np.testing.assert_allclose(losses["commitment_loss"].numpy(), 0.25 * squared, rtol=1e-5)
    # The codebook loss moves only the codes, the commitment loss only the encoder output (VQ-VAE eq. 3).
    assert tape.gradient(losses["codebook_loss"], z) is None
    assert tape.gradient(losses["commitment_loss"], quantizer.codebook) is None
    expected = 2 * 0.25 * (z.numpy() - e) / z.numpy().size
    np.testing.assert_allclose(tape.gradient(losses["commitment_loss"], z).numpy(), expected, rtol=1e-5)
    codebook_grad = tf.convert_to_tensor(tape.gradient(losses["codebook_loss"], quantizer.codebook)).numpy()
    used = np.unique(codes.numpy())
    assert np.all(codebook_grad[np.setdiff1d(np.arange(16), used)] == 0) and np.any(codebook_grad[used] != 0)


def test_the_codebook_starts_as_vqgan_uniform_in_plus_minus_one_over_k():
    codebook = VectorQuantizer(num_codes=64, dim=8).codebook.numpy()
    assert np.abs(codebook).max() <= 1 / 64 and np.abs(codebook).max() > 0.9 / 64


def test_usage_of_a_hand_made_assignment():
    counts = code_counts(tf.constant([[0, 0], [1, 3]]), num_codes=4)
    np.testing.assert_array_equal(counts.numpy(), [2, 1, 0, 1])
    perplexity, unused = code_usage(counts)
    p = np.array([0.5, 0.25, 0.25])
    np.testing.assert_allclose(perplexity.numpy(), math.exp(-(p * np.log(p)).sum()), rtol=1e-6)  # 2.83
    assert unused.numpy() == 0.25
    perplexity, unused = code_usage(code_counts(tf.range(8), 8))  # every code once: perplexity K
    np.testing.assert_allclose(perplexity.numpy(), 8.0, rtol=1e-6)
    assert unused.numpy() == 0.0
    perplexity, unused = code_usage(code_counts(tf.fill([10], 2), 8))  # one code: perplexity 1
    np.testing.assert_allclose(perplexity.numpy(), 1.0)
    assert unused.numpy() == 7 / 8


def test_bad_codebook_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"^bad codebook: 0 codes of width 4 \(both must be positive\)$"):
        VectorQuantizer(0, 4)
