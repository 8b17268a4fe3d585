"""What a sample of any generator here is: the z and label of seed s (hit.core.seeds), clip(G(z, label)) to
[-1, 1], and `Decoded`, which shows a latent-space generator (GAT) as an image generator.

Training's sample grids, the evaluator, tools/sample.py and the exported `seed` signature all draw through here,
so a seed gives the same sample everywhere. HiT samples without truncation (the paper uses none).
"""

import tensorflow as tf

from hit.core.seeds import seed_labels, seed_latents


def is_conditional(generator):
    """A class-conditional generator (GAT) has num_classes and takes G(z, labels, truncation_psi=...)."""
    return getattr(generator, "num_classes", None) is not None


class Decoded:
    """A latent-space generator (GAT) as an image generator: images = decode(G(z, labels, truncation_psi)).

    `model` is the Keras generator, what checkpoints restore and exports capture; `decode` maps its output to
    images in [-1, 1] (the SD-VAE, or the identity for pixel-space runs); `decoder` names it in results;
    `decoder_model` is the Keras model decode runs (the SD-VAE), if any, for exports."""

    def __init__(self, model, decode, decoder, decoder_model=None):
        self.model, self.decode, self.decoder, self.decoder_model = model, decode, decoder, decoder_model
        self.latent_dim, self.num_classes = model.latent_dim, model.num_classes

    def __call__(self, z, labels, truncation_psi=0.0, training=False):
        return self.decode(self.model(z, labels, truncation_psi=truncation_psi, training=training))


def images(generator, z, labels=None, truncation_psi=0.0):
    """clip(G(z, training=False), -1, 1); a class-conditional generator takes `labels` and the truncation psi
    (0: none)."""
    if not is_conditional(generator):
        return tf.clip_by_value(generator(z, training=False), -1.0, 1.0)
    return tf.clip_by_value(generator(z, labels, truncation_psi=truncation_psi, training=False), -1.0, 1.0)


def seed_images(generator, seeds, label=None, truncation_psi=0.0, label_mode="balanced"):
    """The samples of `seeds` ([N] integers): images(G, z of each seed, and for a class-conditional generator
    the class `label`, or each seed's class when it is None: hit.core.seeds.seed_labels(seeds, K, label_mode))."""
    labels = None
    if is_conditional(generator):
        labels = (seed_labels(seeds, generator.num_classes, label_mode) if label is None
                  else tf.fill(tf.shape(seeds), label))
    return images(generator, seed_latents(seeds, generator.latent_dim), labels, truncation_psi)
