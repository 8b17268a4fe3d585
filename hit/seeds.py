"""Stateless randomness: every random draw inside a step is keyed by values such as (seed, step, index), so a
run replays bit-identically after a resume (DESIGN.md). Philox is pinned: the default algorithm draws
differently under XLA than eagerly."""

import tensorflow as tf


def stateless_seed(*values):
    """A [2] int64 seed for tf.random.stateless_*: (0, 0) with each value folded in, in order."""
    key = tf.constant([0, 0], tf.int64)
    for value in values:
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(value, tf.int64), alg="philox")
    return key
