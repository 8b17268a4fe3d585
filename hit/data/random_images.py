"""Deterministic random images: a data source for smoke runs and tests that needs no files."""

import tensorflow as tf


def random_images(resolution, channels=3, seed=0, start=0):
    """An endless dataset of {"image": uniform [-1, 1] (resolution, resolution, channels)}.

    Element i depends only on (seed, i), so any slice of the stream can be reproduced; the stream begins at
    element `start`.
    """

    def make(index):
        image = tf.random.stateless_uniform([resolution, resolution, channels], seed=[seed, index],
                                            minval=-1.0, maxval=1.0)
        return {"image": image}

    return tf.data.Dataset.range(start, 2**62).map(make)
