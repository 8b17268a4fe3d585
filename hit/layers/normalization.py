"""Normalization of the pre-norm blocks (Appendix A.1, Table 8 left; official hit-gan
models/layers.py `make_norm_layer`).

The official generator uses Keras 2's BatchNormalization on TPU cores that each see 8 images. Two details of
that set-up are not Keras 3's defaults, and `GroupedBatchNormalization` restores both:

- Population: statistics come from each core's 8 images. `group_size` computes them over fixed groups of that
  many samples inside a replica's batch ("ghost batches"), so 1 GPU with batch 256 normalises like 32 cores.
- Moving variance: the official layers see 4-D inputs, so Keras 2 ran its fused kernel, whose running average
  takes the Bessel-corrected batch variance, var * n / (n - 1) (n values per channel). Keras 3 takes the biased
  one. `unbiased_moving_variance=True` (the default) is the official behaviour; normalisation itself uses the
  biased variance either way.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

NORM_TYPES = ("batch", "sync_batch", "layer")
MOMENTUM, EPSILON = 0.99, 1e-3  # Keras' defaults, as the official code


def check_group_size(group_size):
    """group_size as an int, or None; anything else is a one-line error."""
    if group_size is None:
        return None
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 1:
        raise ValueError(f"bad BatchNorm group size: {group_size!r} (a positive integer or None)")
    return int(group_size)


class GroupedBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization with ghost-batch statistics and the official moving variance (module docstring).

    In training, the batch [B, ..., C] is split into B / group_size groups of consecutive samples; each group is
    normalised by its own mean and biased variance over (samples, positions), and the moving statistics move
    towards the mean over groups of the group statistics (what averaging B / group_size replicas gives).
    group_size None: one group, the whole batch. Inference is Keras' own path (the moving statistics).
    """

    def __init__(self, group_size=None, unbiased_moving_variance=True, **kwargs):
        super().__init__(**kwargs)
        if self.axis != -1 or self.renorm:
            raise ValueError("GroupedBatchNormalization normalises the last axis, without renorm")
        self.group_size = check_group_size(group_size)
        self.unbiased_moving_variance = unbiased_moving_variance

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable):
            return super().call(inputs, training=training, mask=mask)
        if mask is not None:
            raise ValueError(f"{self.name}: masks are not supported in training")
        x = keras.ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        batch, channels = x.shape[0], x.shape[-1]
        if self.group_size is None or self.group_size == batch:  # one group: the same ops as Keras' own layer
            groups, axes = x, list(range(x.shape.rank - 1))
        else:
            if batch is not None and batch % self.group_size:
                raise ValueError(f"BatchNorm group size {self.group_size} does not divide the batch of {batch} "
                                 f"in {self.name}")
            groups = tf.reshape(x, tf.concat([[-1, self.group_size], tf.shape(x)[1:]], axis=0))
            axes = list(range(1, groups.shape.rank - 1))  # [G, group, ..., C]: a group's samples and positions
        mean, variance = tf.nn.moments(groups, axes, keepdims=groups is not x)  # [C], or [G, 1, ..., 1, C]
        sample_variance = variance
        if self.unbiased_moving_variance:
            n = tf.cast(tf.reduce_prod(tf.gather(tf.shape(groups), axes)), variance.dtype)  # values per channel
            sample_variance = variance * (n / tf.maximum(n - 1.0, 1.0))
        for moving, statistic in ((self.moving_mean, mean), (self.moving_variance, sample_variance)):
            if groups is not x:  # the mean over groups, as averaging replicas of one group each would give
                statistic = tf.reshape(tf.reduce_mean(statistic, axis=0), [channels])
            moving.assign(moving * self.momentum + statistic * (1.0 - self.momentum))
        outputs = tf.nn.batch_normalization(groups, mean, variance, self.beta, self.gamma, self.epsilon)
        return keras.ops.cast(tf.reshape(outputs, tf.shape(x)), self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "group_size": self.group_size,
                "unbiased_moving_variance": self.unbiased_moving_variance}


@dataclasses.dataclass(frozen=True)
class Norm:
    """Which norm every pre-norm of a generator uses; `make(name)` builds one.

    norm_type "batch" (default), "layer" (the Table 8 ablation, LayerNorm eps 1e-6 as the official option) or
    "sync_batch" (cross-replica statistics; it cannot run inside a `jit_compile=True` replica step). The two
    BatchNorm options apply to "batch" (module docstring).
    """

    norm_type: str = "batch"
    bn_group_size: int = None
    bn_unbiased_moving_variance: bool = True

    def __post_init__(self):
        if self.norm_type not in NORM_TYPES:
            raise ValueError(f"unknown norm_type {self.norm_type!r}; expected one of {NORM_TYPES}")
        check_group_size(self.bn_group_size)
        if self.bn_group_size is not None and self.norm_type != "batch":
            raise ValueError(f"bn_group_size applies to norm_type 'batch', not {self.norm_type!r}")

    def make(self, name):
        if self.norm_type == "batch":
            return GroupedBatchNormalization(self.bn_group_size, self.bn_unbiased_moving_variance, momentum=MOMENTUM,
                                             epsilon=EPSILON, name=name)
        if self.norm_type == "sync_batch":
            return keras.layers.BatchNormalization(momentum=MOMENTUM, epsilon=EPSILON, synchronized=True, name=name)
        return keras.layers.LayerNormalization(epsilon=1e-6, name=name)


def make_norm(norm_type, name):
    """A norm layer of the given type with the official BatchNorm defaults (see Norm)."""
    return Norm(norm_type).make(name)


# ---- RMSNorm (GAT: official models/generator.py, models/discriminator.py) -------------------------------------
# torch.nn.RMSNorm: x * rsqrt(mean(x^2, last axis) + eps) [* weight]. keras.layers.RMSNormalization computes exactly
# that (in at least float32, cast back to the input's dtype; weight "scale", initialised to ones), so the affine
# RMSNorms use it and the parameter-free ones call `rms_norm`.
RMS_NORM_EPSILON = 1e-6  # every block / head norm of GAT's G and D
# The QK-norms are nn.RMSNorm(head_dim) with eps=None: torch takes finfo(float32).eps for float32, bfloat16 and
# float16 inputs alike (it computes in float32 since PyTorch PR 142848).
QK_NORM_EPSILON = float(np.finfo(np.float32).eps)


def rms_norm(x, epsilon=RMS_NORM_EPSILON):
    """RMSNorm without affine over the last axis (nn.RMSNorm(elementwise_affine=False)), in float32, cast back."""
    return keras.ops.rms_normalization(x, scale=None, axis=-1, epsilon=epsilon)


def rms_norm_layer(name, epsilon=RMS_NORM_EPSILON):
    """RMSNorm with a learnable per-channel scale (nn.RMSNorm(elementwise_affine=True)) over the last axis."""
    return keras.layers.RMSNormalization(axis=-1, epsilon=epsilon, name=name)
