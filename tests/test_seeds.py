"""Stateless keys with domain tags, and draws that XLA and TensorFlow's kernels make alike."""

import numpy as np
import pytest
import tensorflow as tf

from hit.core.seeds import seed_labels, seed_range, stateless_normal, stateless_seed, stateless_uniform


def test_domains_never_share_a_key_for_the_same_values():
    for values in [(0,), (0, 0, 1), (5, 123, 2)]:
        assert not np.array_equal(stateless_seed("data", *values).numpy(), stateless_seed("step", *values).numpy())
    np.testing.assert_array_equal(stateless_seed("step", 1, 2).numpy(), stateless_seed("step", 1, 2).numpy())
    with pytest.raises(ValueError, match="unknown seed domain 'eval'; known: step, data"):
        stateless_seed("eval", 1)


def test_draws_are_the_same_with_and_without_xla_for_a_key_known_only_at_run_time():
    seed = stateless_seed("step", 0, 7, 0)  # an argument of the compiled function, not a constant

    def draw(key):
        return stateless_uniform([4096], key), stateless_normal([64, 64], key)

    (u_eager, z_eager), (u_xla, z_xla) = draw(seed), tf.function(draw, jit_compile=True)(seed)
    np.testing.assert_array_equal(u_eager.numpy(), u_xla.numpy())
    np.testing.assert_allclose(z_eager.numpy(), z_xla.numpy(), rtol=1e-5, atol=1e-6)  # log and cos: last bits
    z = stateless_normal([200_000], seed).numpy()
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01 and np.abs(z).max() < 5.9


def test_random_labels_are_per_seed_uniform_and_checked():
    labels = seed_labels(seed_range(0, 5000), 10, "random").numpy()
    assert labels.min() == 0 and labels.max() == 9 and np.abs(np.bincount(labels) / 5000 - 0.1).max() < 0.02
    np.testing.assert_array_equal(seed_labels(seed_range(100, 7), 10, "random"), labels[100:107])
    np.testing.assert_array_equal(seed_labels(seed_range(0, 12), 10), np.arange(12) % 10)
    with pytest.raises(ValueError, match="unknown label mode 'uniform'"):
        seed_labels(seed_range(0, 3), 10, "uniform")
