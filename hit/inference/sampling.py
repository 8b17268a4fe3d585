"""Samples of a generator in bulk: batches of seeds, interpolations between them, PNG files.

Sample i of `sample(generator, num, seed)` is the sample of seed `seed + i` (hit.models.samples): z ~ N(0, I)
drawn statelessly from that seed alone, and for a class-conditional generator (GAT) the class of that seed
unless a label is given; G(z, training=False) clipped to [-1, 1]. Generators of trained runs come from
hit.inference.runs.
"""

import os

import numpy as np
import tensorflow as tf

from hit.core.images import to_uint8
from hit.core.seeds import seed_labels, seed_latents, seed_range
from hit.models.samples import images, is_conditional, seed_images

INTERPOLATIONS = ("slerp", "lerp")
BATCH_SIZE = 64  # latents per generator call, so that large sample counts fit in memory


def check_label(generator, label):
    """None, or a class index the generator has: a one-line error otherwise (also for unconditional ones)."""
    if label is None:
        return None
    if not is_conditional(generator):
        raise ValueError("this run's generator is unconditional: it takes no class label")
    if not 0 <= label < generator.num_classes:
        raise ValueError(f"class label {label} is outside [0, {generator.num_classes})")
    return label


def sample_batches(generator, num, seed=0, progress=None, label=None, truncation_psi=0.0):
    """sample() in batches of at most BATCH_SIZE images, for writing more images than fit in memory.

    progress: None, or a hit.core.progress.Progress (anything with update(count)), told each batch's size once
    the caller has taken the batch and asks for the next one, so that its count is of images handled."""
    if num < 1:
        raise ValueError(f"the number of samples must be positive, got {num}")
    for start in range(0, num, BATCH_SIZE):
        out = seed_images(generator, seed_range(seed + start, min(BATCH_SIZE, num - start)), label, truncation_psi)
        yield out
        if progress is not None:
            progress.update(len(out))


def sample(generator, num, seed=0, progress=None, label=None, truncation_psi=0.0):
    """[num, H, W, C] float images in [-1, 1]: the samples of seeds seed, seed + 1, ... (progress: as in
    sample_batches; label and truncation_psi for class-conditional generators: a class for every sample, else
    each seed's own)."""
    return tf.concat(list(sample_batches(generator, num, seed, progress, label, truncation_psi)), axis=0)


def interpolation_latents(latent_dim, num_strips, steps, seed=0, mode="slerp"):
    """[num_strips, steps, latent_dim]: strip i goes from the z of seed `seed + i` to that of
    seed `seed + num_strips + i`.

    So a strip's end points are samples of the same seed. "slerp" (default) follows the arc between the end
    points, sin((1-t)w)/sin(w) a + sin(tw)/sin(w) b with w the angle between them, which keeps Gaussian
    latents at a typical norm; "lerp" the straight line, whose middle is shorter than Gaussian latents are.
    """
    if mode not in INTERPOLATIONS:
        raise ValueError(f"mode must be one of {', '.join(INTERPOLATIONS)}, got {mode!r}")
    if num_strips < 1 or steps < 2:
        raise ValueError(f"need at least 1 strip and 2 steps, got {num_strips} strips and {steps} steps")
    z = seed_latents(seed_range(seed, 2 * num_strips), latent_dim).numpy().astype(np.float64)
    a, b = z[:num_strips, None], z[num_strips:, None]  # [strips, 1, latent]
    t = np.linspace(0.0, 1.0, steps)[None, :, None]  # [1, steps, 1]
    line = (1 - t) * a + t * b
    if mode == "lerp":
        return tf.constant(line, tf.float32)
    cos = np.sum(a * b, axis=-1, keepdims=True) / (np.linalg.norm(a, axis=-1, keepdims=True) *
                                                   np.linalg.norm(b, axis=-1, keepdims=True))
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    sin = np.sin(omega)
    safe = np.where(sin > 1e-6, sin, 1.0)
    arc = (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / safe
    return tf.constant(np.where(sin > 1e-6, arc, line), tf.float32)  # (anti)parallel end points: the line


def interpolate(generator, num_strips, steps, seed=0, mode="slerp", progress=None, label=None, truncation_psi=0.0):
    """[num_strips, steps, H, W, C] images in [-1, 1] along interpolation_latents (paper Figure 7; progress:
    as in sample_batches). A class-conditional generator keeps one class along a strip: `label`, or strip i the
    class of seed `seed + i`."""
    z = tf.reshape(interpolation_latents(generator.latent_dim, num_strips, steps, seed, mode), [num_strips * steps, -1])
    labels = None
    if is_conditional(generator):
        strips = (tf.fill([num_strips], label) if label is not None
                  else seed_labels(seed_range(seed, num_strips), generator.num_classes))
        labels = tf.repeat(strips, steps)
    batches = []
    for start in range(0, num_strips * steps, BATCH_SIZE):
        end = start + BATCH_SIZE
        batches.append(images(generator, z[start:end], None if labels is None else labels[start:end], truncation_psi))
        if progress is not None:
            progress.update(len(batches[-1]))
    out = tf.concat(batches, axis=0)
    return tf.reshape(out, [num_strips, steps, *out.shape[1:]])


def write_individual_pngs(images, folder, start_index=0):
    """Write [-1, 1] images (N, H, W, C) as folder/000000.png, ... from start_index (for external FID tools);
    creates the folder. Returns the paths written."""
    tf.io.gfile.makedirs(folder)
    paths = []
    for i, image in enumerate(to_uint8(images)):
        path = os.path.join(folder, f"{start_index + i:06d}.png")
        tf.io.write_file(path, tf.io.encode_png(image))
        paths.append(path)
    return paths
