"""The one initializer HiT's generator uses (official hit-gan models/generators.py, models/layers.py)."""

import keras


def trunc_normal():
    """TruncatedNormal(stddev=0.02), cut at 2 sigma, for every G kernel and position embedding."""
    return keras.initializers.TruncatedNormal(stddev=0.02)
