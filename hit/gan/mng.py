"""Multi-level Noise-perturbed image Guidance (MNG; official GAT losses/Rp_PT_loss.py
`info_per_layer`, `apply_gaussian_list_cumulative`): what the discriminator sees of GAT's four levels.

G's four accumulated outputs x_1..x_4 (shallow to deep) are each perturbed rectified-flow style,

    x~_k = (1 - t_k) x_k + n_k,   std(n_k) = t_k,   t = (0.885, 0.76, 0.51, 0.01),

where 1 - t_k = I_min^(1 - k/3) with I_min = 0.125 (the retained signal doubles per level), plus 0.01. The noises
are nested, one forward-diffusion trajectory: the first fresh draw, scaled to t_4 = 0.01, goes to the cleanest
level; each noisier level carries the previous noise shrunk by (1 - t_new) / (1 - t_old) and adds fresh noise of
variance t_new^2 - t_old^2 ((1 - t_new) / (1 - t_old))^2 (adjacent-level correlations 0.41, 0.33, 0.01). The four
perturbed levels go through D in one pass, stacked on channels (channel = level * C + c: 32x32x16 for C = 4).
A real latent is copied to all four levels.
"""

import tensorflow as tf

from hit.core.seeds import stateless_normal

NUM_LEVELS = 4
MIN_INFORMATION = 0.125
OFFSET = 0.01


def noise_levels(num_levels=NUM_LEVELS, min_information=MIN_INFORMATION, offset=OFFSET):
    """The noise stds t_k, shallow to deep: 1 - min_information^(1 - k / (L - 1)) + offset ("info_per_layer")."""
    if num_levels < 2:
        raise ValueError(f"MNG needs at least 2 levels, got {num_levels}")
    return tuple(1.0 - min_information ** (1.0 - k / (num_levels - 1)) + offset for k in range(num_levels))


NOISE_LEVELS = noise_levels()  # (0.885, 0.76, 0.51, 0.01)


def nested_noise(shape, seed, levels=NOISE_LEVELS):
    """[L, *shape] float32 noise n_k with std t_k, nested as the module says; a pure function of `seed` ([2])."""
    return nest_noise(stateless_normal([len(levels), *shape], seed), levels)


def nest_noise(fresh, levels=NOISE_LEVELS):
    """Fresh N(0, I) draws [L, ...] -> the nested noises [L, ...] (shallow to deep). fresh[0] goes to the cleanest
    level, then shallower, as the official `seed_noise[idx]` over the reversed levels."""
    if fresh.shape[0] != len(levels):
        raise ValueError(f"MNG noise needs {len(levels)} fresh draws on axis 0, got shape {fresh.shape}")
    noise = [levels[-1] * fresh[0]]
    for i, k in enumerate(range(len(levels) - 2, -1, -1), start=1):
        shrink = (1.0 - levels[k]) / (1.0 - levels[k + 1])
        added = (levels[k] ** 2 - (levels[k + 1] * shrink) ** 2) ** 0.5
        noise.insert(0, shrink * noise[0] + added * fresh[i])
    return tf.stack(noise)


def perturb(levels_stack, noise, levels=NOISE_LEVELS):
    """x~_k = (1 - t_k) x_k + n_k for [L, B, H, W, C] levels and noise of the same shape."""
    signal = tf.reshape(tf.constant([1.0 - t for t in levels], levels_stack.dtype), [-1, 1, 1, 1, 1])
    return signal * levels_stack + tf.cast(noise, levels_stack.dtype)


def copies(x, num_levels=NUM_LEVELS):
    """A real sample on every level: [B, H, W, C] -> [L, B, H, W, C]."""
    return tf.stack([x] * num_levels)
