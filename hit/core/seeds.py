"""Stateless randomness: every random draw inside a step is keyed by values such as (seed, step, index), so a
run replays bit-identically after a resume (docs/architecture.md,
"Seeds").

Each key starts from a domain tag, so the input pipeline's draws ("data": (seed, start step, element)) and the
training step's ("step": (seed, step, stream)) never share a key, even where their values coincide.

"The sample of seed s" is one convention everywhere (training's sample grids, the evaluator, tools/sample.py, the
exported `seed` signature): its z is seed_latents([s]) and its class, for a class-conditional generator,
seed_labels([s]); a batch of samples from seed s is seeds s, s + 1, ... (hit.models.samples).

Draws inside XLA-compiled code must equal the same draws outside it (a run with and without jit_compile, the
whole-step reference test). Two TensorFlow defaults break that: the "auto_select" algorithm (pinned to Philox
here) and the conversion of random bits to floats, which XLA does differently from the TF kernels (for the same
key tf.random.stateless_normal draws other numbers under XLA). So floats are built here from 24 random integer
bits, which both draw alike.
"""

import math

import tensorflow as tf

DOMAINS = {"step": 1, "data": 2}
RNG = "philox"


def stateless_seed(domain, *values):
    """A [2] int64 seed for tf.random.stateless_*: (0, 0) with the domain's tag, then each value, folded in."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown seed domain {domain!r}; known: {', '.join(DOMAINS)}")
    key = tf.constant([0, 0], tf.int64)
    for value in (DOMAINS[domain], *values):
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(value, tf.int64), alg=RNG)
    return key


def stateless_uniform(shape, seed):
    """Floats in [0, 1) on a grid of 2^-24, the same with and without XLA."""
    bits = tf.random.stateless_uniform(shape, seed, minval=0, maxval=1 << 24, dtype=tf.int32, alg=RNG)
    return tf.cast(bits, tf.float32) * 2.0**-24


def stateless_normal(shape, seed):
    """Standard normal floats by Box-Muller from two 24-bit uniforms: the same numbers with and without XLA, up to
    the last bits of log and cos (|values| < 5.9)."""
    u = stateless_uniform([2, *shape], seed) + 2.0**-25  # (0, 1): log(0) cannot happen
    return tf.sqrt(-2.0 * tf.math.log(u[0])) * tf.cos(2.0 * math.pi * u[1])


def seed_range(start, num):
    """[num] int64 seeds start, start + 1, ...: the seeds of `num` samples from seed `start`."""
    return tf.range(start, start + num, dtype=tf.int64)


def seed_latents(seeds, latent_dim):
    """z [len(seeds), latent_dim]: row i ~ N(0, I) drawn statelessly (Philox) from (seeds[i], 0) alone, so a seed
    gives the same z whatever batch it is drawn in."""
    return _seed_latents(tf.cast(seeds, tf.int64), latent_dim)


# A graph: run eagerly, map_fn costs one Python iteration per row (3.7 ms each here; 3 minutes for 50k samples).
@tf.function(reduce_retracing=True)
def _seed_latents(seeds, latent_dim):
    return tf.map_fn(lambda s: tf.random.stateless_normal([latent_dim], seed=tf.stack([s, tf.constant(0, tf.int64)]),
                                                          alg=RNG),
                     seeds, fn_output_signature=tf.float32)


LABEL_MODES = ("balanced", "random")


def seed_labels(seeds, num_classes, mode="balanced"):
    """[len(seeds)] int32 class of each seed. "balanced": seed % num_classes, every class in turn over consecutive
    seeds; "random": uniform, drawn statelessly from (seed, 1), as official GAT's FID-50K (random labels)."""
    if mode not in LABEL_MODES:
        raise ValueError(f"unknown label mode {mode!r}; expected one of {', '.join(LABEL_MODES)}")
    seeds = tf.cast(seeds, tf.int64)
    if mode == "random":
        return _random_labels(seeds, num_classes)
    return tf.cast(tf.math.floormod(seeds, num_classes), tf.int32)


@tf.function(reduce_retracing=True)
def _random_labels(seeds, num_classes):
    return tf.map_fn(lambda s: tf.random.stateless_uniform([], tf.stack([s, tf.constant(1, tf.int64)]), 0,
                                                           num_classes, tf.int32, alg=RNG),
                     seeds, fn_output_signature=tf.int32)
