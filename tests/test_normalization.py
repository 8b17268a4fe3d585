"""GroupedBatchNormalization: ghost-batch statistics (the official 8 images per TPU core) and Keras 2's
Bessel-corrected moving variance, against numpy formulas and against separate layers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from hit.layers.normalization import GroupedBatchNormalization, Norm


def inputs(batch=32, positions=6, channels=5, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch, positions, channels)) * rng.uniform(0.5, 2, channels) + 1.5).astype(np.float32)


def layer_with_weights(layer, channels=5, seed=1):
    """Builds `layer` and gives it random gamma / beta / moving statistics (the same for the same seed)."""
    layer.build((None, 6, channels))
    rng = np.random.default_rng(seed)
    for variable, value in zip((layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance),
                               (rng.uniform(0.5, 1.5, channels), rng.normal(size=channels),
                                rng.normal(size=channels), rng.uniform(0.5, 1.5, channels))):
        variable.assign(value.astype(np.float32))
    return layer


def state(layer):
    return {name: getattr(layer, name).numpy() for name in ("moving_mean", "moving_variance")}


@pytest.mark.parametrize("jit", [False, True])
def test_groups_of_8_in_a_batch_of_32_equal_4_replicas_of_8(jit):
    x = inputs()
    grouped = layer_with_weights(GroupedBatchNormalization(group_size=8))
    call = tf.function(lambda t: grouped(t, training=True), jit_compile=True) if jit else (
        lambda t: grouped(t, training=True))
    out = call(x).numpy()
    replicas = [layer_with_weights(GroupedBatchNormalization()) for _ in range(4)]
    expected = np.concatenate([r(x[8 * i:8 * i + 8], training=True).numpy() for i, r in enumerate(replicas)])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # The moving statistics: the replicas' mean, as the official EMA and checkpoints read them.
    for name, value in state(grouped).items():
        np.testing.assert_allclose(value, np.mean([state(r)[name] for r in replicas], axis=0), rtol=1e-6,
                                   err_msg=name)


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("group_size", [None, 4])
def test_outputs_and_moving_statistics_follow_the_formulas(unbiased, group_size):
    x = inputs(batch=8)
    layer = layer_with_weights(GroupedBatchNormalization(group_size, unbiased_moving_variance=unbiased))
    before = state(layer)
    out = layer(x, training=True).numpy()
    gamma, beta = layer.gamma.numpy().astype(np.float64), layer.beta.numpy().astype(np.float64)
    groups = x.astype(np.float64).reshape(-1, group_size or 8, 6, 5)
    mean, variance = groups.mean(axis=(1, 2)), groups.var(axis=(1, 2))  # [G, C], biased
    normalised = (groups - mean[:, None, None]) / np.sqrt(variance[:, None, None] + 1e-3) * gamma + beta
    np.testing.assert_allclose(out, normalised.reshape(x.shape), rtol=1e-5, atol=1e-5)
    n = (group_size or 8) * 6  # values per channel in a group
    folded = variance * n / (n - 1) if unbiased else variance  # Keras 2's fused kernel: Bessel-corrected
    after = state(layer)
    np.testing.assert_allclose(after["moving_mean"], 0.99 * before["moving_mean"] + 0.01 * mean.mean(0), rtol=1e-6)
    np.testing.assert_allclose(after["moving_variance"], 0.99 * before["moving_variance"] + 0.01 * folded.mean(0),
                               rtol=1e-6)


def test_one_group_without_the_correction_is_keras_batchnorm_bit_for_bit():
    x = inputs(batch=8)
    ours = layer_with_weights(GroupedBatchNormalization(unbiased_moving_variance=False))
    theirs = layer_with_weights(keras.layers.BatchNormalization(momentum=0.99, epsilon=1e-3))
    for training in (True, False, True):
        np.testing.assert_array_equal(ours(x, training=training).numpy(), theirs(x, training=training).numpy())
    for name, value in state(ours).items():
        np.testing.assert_array_equal(value, state(theirs)[name], err_msg=name)
    assert [v.name for v in ours.variables] == [v.name for v in theirs.variables]  # same checkpoint names


def test_bad_group_sizes_are_one_line_errors():
    with pytest.raises(ValueError, match=r"bad BatchNorm group size: 0 \(a positive integer or None\)"):
        GroupedBatchNormalization(group_size=0)
    with pytest.raises(ValueError, match="bad BatchNorm group size: 2.5"):
        Norm("batch", bn_group_size=2.5)
    with pytest.raises(ValueError, match="bn_group_size applies to norm_type 'batch', not 'layer'"):
        Norm("layer", bn_group_size=8)
    with pytest.raises(ValueError, match="unknown norm_type 'group'"):
        Norm("group")
    layer = GroupedBatchNormalization(group_size=3, name="norm")
    with pytest.raises(ValueError, match="BatchNorm group size 3 does not divide the batch of 8 in norm"):
        layer(inputs(batch=8), training=True)
