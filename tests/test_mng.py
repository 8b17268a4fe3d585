"""MNG (official GAT losses/Rp_PT_loss.py): the noise schedule, the nested noise's marginal stds and adjacent-level
correlations (many samples), the perturbation and D's channel layout."""

import numpy as np
import pytest
import tensorflow as tf

from hit.gan import mng
from hit.models.gat import stack_levels


def test_schedule_is_the_official_one():
    np.testing.assert_allclose(mng.NOISE_LEVELS, (0.885, 0.76, 0.51, 0.01), atol=1e-12)
    np.testing.assert_allclose([1 - t for t in mng.NOISE_LEVELS], (0.115, 0.24, 0.49, 0.99), atol=1e-12)
    with pytest.raises(ValueError, match="at least 2 levels"):
        mng.noise_levels(1)


def test_nested_noise_has_the_level_stds_and_the_trajectory_correlations():
    noise = mng.nested_noise([200_000], tf.constant([3, 4], tf.int64)).numpy()  # [4, N]
    t = np.array(mng.NOISE_LEVELS)
    np.testing.assert_allclose(noise.std(axis=1), t, rtol=0.01)
    np.testing.assert_allclose(noise.mean(axis=1), 0.0, atol=0.01)
    correlation = np.corrcoef(noise)
    # Nested: n_k = r n_(k+1) + fresh, r = (1 - t_k) / (1 - t_(k+1)), so corr(n_k, n_(k+1)) = r t_(k+1) / t_k
    # (0.41, 0.33, 0.01), and two levels apart the product of the two adjacent ones.
    adjacent = [(1 - t[k]) / (1 - t[k + 1]) * t[k + 1] / t[k] for k in range(3)]
    np.testing.assert_allclose(adjacent, [0.4115, 0.3287, 0.0097], atol=5e-4)
    for k in range(3):
        assert abs(correlation[k, k + 1] - adjacent[k]) < 0.01
    assert abs(correlation[0, 2] - adjacent[0] * adjacent[1]) < 0.01
    # The noise / signal ratio grows with the noise level: the levels form one forward trajectory of x + noise.
    first = mng.nested_noise([8], tf.constant([3, 4], tf.int64))
    np.testing.assert_array_equal(first, mng.nested_noise([8], tf.constant([3, 4], tf.int64)))  # stateless
    assert not np.allclose(first, mng.nested_noise([8], tf.constant([3, 5], tf.int64)))


def test_perturb_and_stack_layout():
    x = tf.reshape(tf.range(4 * 2 * 3 * 3 * 2, dtype=tf.float32), [4, 2, 3, 3, 2])
    noise = tf.ones_like(x)
    out = mng.perturb(x, noise)
    for k, t in enumerate(mng.NOISE_LEVELS):
        np.testing.assert_allclose(out[k], (1 - t) * x[k] + 1.0, rtol=1e-6)
    stacked = stack_levels(x)
    assert stacked.shape == (2, 3, 3, 8)
    for level in range(4):
        for c in range(2):
            np.testing.assert_array_equal(stacked[..., level * 2 + c], x[level, ..., c])  # channel = level * C + c
    np.testing.assert_array_equal(mng.copies(x[0]), tf.stack([x[0]] * 4))
