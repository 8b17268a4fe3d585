"""The EMA generator: hard copy at the start step, then the decay formula exactly, under strategies too."""

import numpy as np
import pytest
import tensorflow as tf

from hit.gan.ema import ExponentialMovingAverage
from hit.models.presets import get_generator


def _weights(model):
    return {v.path.split("/", 1)[1]: v.numpy().copy() for v in model.variables}


def _perturb(model, seed):
    for i, v in enumerate(model.variables):
        v.assign(v + tf.random.stateless_normal(v.shape, [seed, i]))


@pytest.mark.slow
def test_copy_at_start_step_then_decay_formula_exactly():
    model = get_generator("hit_tiny_32")
    ema_model = get_generator("hit_tiny_32", name="ema_generator")
    ema = ExponentialMovingAverage(model, ema_model, decay=0.9, start_step=3)
    initial = _weights(ema_model)
    for step in (1, 2):
        _perturb(model, step)
        ema.update(step)
    assert all(np.array_equal(initial[k], v) for k, v in _weights(ema_model).items())  # untouched before start
    _perturb(model, 3)
    ema.update(3)
    expected = _weights(model)
    assert all(np.array_equal(expected[k], v) for k, v in _weights(ema_model).items())  # hard copy, BN stats too
    for step in (4, 5):
        _perturb(model, step)
        current = _weights(model)
        expected = {k: np.float32(e - np.float32(1 - 0.9) * (e - current[k])) for k, e in expected.items()}
        ema.update(step)
        for k, v in _weights(ema_model).items():
            np.testing.assert_allclose(v, expected[k], rtol=1e-6, atol=1e-7, err_msg=k)
    assert any("moving_variance" in k for k in expected)


@pytest.mark.slow
def test_pairs_by_path_and_rejects_a_different_model():
    model = get_generator("hit_tiny_32")
    with pytest.raises(ValueError, match="EMA model does not match"):
        ExponentialMovingAverage(model, get_generator("hit_tiny_32", name="other", cross_attention=False))


@pytest.mark.slow
def test_update_in_each_replica_xla_compiled_inside_a_tf_range_loop_under_mirrored_strategy(two_replicas):
    """Where GANTask runs it: in the replica step, jit-compiled. Each replica writes its own copy (no merge_call,
    the official code's crash); the copies stay identical."""
    strategy = two_replicas
    with strategy.scope():
        model = get_generator("hit_tiny_32", num_layers=(1, 1, 1))
        ema_model = get_generator("hit_tiny_32", num_layers=(1, 1, 1), name="ema_generator")
        step = tf.Variable(0, dtype=tf.int64)
    ema = ExponentialMovingAverage(model, ema_model, decay=0.5, start_step=1)
    update = tf.function(ema.update, jit_compile=True)
    weight = model.trainable_variables[0]

    def replica_step(step):
        weight.assign_add(tf.ones_like(weight))  # a Keras variable: each replica updates its own copy
        update(step)
        assert not tf.distribute.in_cross_replica_context()

    @tf.function
    def loop(n):
        for _ in tf.range(n):
            step.assign_add(1)
            strategy.run(replica_step, args=(step.value(),))

    loop(tf.constant(3))
    start = weight.numpy() - 3  # the value before the loop
    # step 1: copy (start + 1); step 2: mean of it and start + 2; step 3: mean of that and start + 3.
    expected = ((start + 1 + start + 2) / 2 + start + 3) / 2
    for copy in ema_model.trainable_variables[0].value.values:
        np.testing.assert_allclose(copy.numpy(), expected, rtol=1e-5, atol=1e-5)
    copies = [v.numpy() for v in ema_model.variables[5].value.values]
    np.testing.assert_array_equal(copies[0], copies[1])
