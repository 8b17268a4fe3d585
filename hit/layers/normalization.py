"""Normalization choice of the pre-norm blocks (Appendix A.1, Table 8 left; facts 2.5)."""

import keras

NORM_TYPES = ("batch", "sync_batch", "layer")


def make_norm(norm_type, name):
    """BatchNorm by default (Keras defaults momentum 0.99, eps 1e-3, as the official code).

    "layer" is the Table 8 ablation (LayerNorm, eps 1e-6 as the official option). "sync_batch" uses
    cross-replica statistics; note it cannot be used inside a `jit_compile=True` replica step.
    """
    if norm_type == "batch":
        return keras.layers.BatchNormalization(momentum=0.99, epsilon=1e-3, name=name)
    if norm_type == "sync_batch":
        return keras.layers.BatchNormalization(
            momentum=0.99, epsilon=1e-3, synchronized=True, name=name
        )
    if norm_type == "layer":
        return keras.layers.LayerNormalization(epsilon=1e-6, name=name)
    raise ValueError(f"unknown norm_type {norm_type!r}; expected one of {NORM_TYPES}")
