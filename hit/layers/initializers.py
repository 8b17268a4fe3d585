"""The one initializer HiT's generator uses (facts 2.2 and 8.4)."""

import keras


def trunc_normal():
    """TruncatedNormal(stddev=0.02), cut at 2 sigma, for every G kernel and position embedding."""
    return keras.initializers.TruncatedNormal(stddev=0.02)
