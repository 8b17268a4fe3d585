"""Mixed precision and XLA for every model family (issue 14).

- bfloat16: each small preset built under the mixed_bfloat16 policy, given the float32 model's weights, keeps
  float32 variables and float32 outputs within a stated tolerance of the float32 model's (bfloat16 has an 8-bit
  mantissa: about 2-3 significant digits after a few layers);
- a train step of each task (GAN, VQ-HiT) under precision="bfloat16" has finite losses and leaves every
  variable float32 (graph mode, cheaper to build here; GAT's bfloat16 XLA step is tested in test_gat_task.py);
- float16 (GPU) with dynamic loss scaling: GAN steps on 2 replicas (a NaN on one replica skips the update on
  all, the loss scale is checkpointed); R1's input gradient does not underflow; a finite GAT step (AdamW with
  clipping; VQ-HiT's optimizers and R1 are GAN's);
- XLA and graph mode give the same outputs (float32) for the small presets.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.initializers import Constant

from hit.gan import penalties
from hit.models.presets import get_discriminator, get_generator, get_vqhit
from hit.tasks.gan import GANTask
from hit.tasks.gat import GATTask
from hit.tasks.vqhit import VQHiTTask
from hit.train.checkpoints import make_checkpoint
from hit.train.precision import DynamicLossScale, policy_scope

# (factory, preset, input maker, tolerance relative to the float32 output's scale)
MODELS = {
    "hit_tiny_32": (get_generator, "hit_tiny_32", lambda m: tf.random.stateless_normal([4, m.latent_dim], [1, 2])),
    "stylegan_d_tiny_32": (get_discriminator, "stylegan_d_tiny_32",
                           lambda m: tf.random.stateless_uniform([4, 32, 32, 3], [1, 2], -1.0, 1.0)),
    "vqhit_tiny_32": (get_vqhit, "vqhit_tiny_32",
                      lambda m: tf.random.stateless_uniform([2, 32, 32, 3], [1, 2], -1.0, 1.0)),
    "gat_demo": (get_generator, "gat_demo", None),
}
BFLOAT16_TOLERANCE = 0.05  # max |bf16 - f32| / max |f32|


def marked(names):
    """The model names as parameters, HiT's and VQ-HiT's marked slow (building them takes seconds)."""
    return [pytest.param(name, marks=pytest.mark.slow) if name in ("hit_tiny_32", "vqhit_tiny_32") else name
            for name in names]


def _pair(name):
    """(float32 model, bfloat16 model with the same weights, inputs)."""
    factory, preset, make_inputs = MODELS[name]
    model = factory(preset)
    with policy_scope("bfloat16"):
        mixed = factory(preset)
    mixed.set_weights(model.get_weights())
    if make_inputs is None:  # GAT: (latents, labels)
        inputs = (tf.random.stateless_normal([4, model.latent_dim], [1, 2]), tf.constant([0, 1, 2, 3]))
    else:
        inputs = (make_inputs(model),)
    return model, mixed, inputs


def _output(model, inputs):
    out = model(*inputs, training=False)
    return out if isinstance(out, tf.Tensor) else out[0]


@pytest.mark.parametrize("name", marked(sorted(MODELS)))
def test_bfloat16_model_is_close_to_float32_with_float32_variables(name):
    model, mixed, inputs = _pair(name)
    assert mixed.compute_dtype == "bfloat16"
    assert {v.dtype for v in mixed.variables} == {"float32"}
    exact, approx = _output(model, inputs), _output(mixed, inputs)
    assert approx.dtype == tf.float32 and approx.shape == exact.shape
    scale = float(tf.reduce_max(tf.abs(exact)))
    error = float(tf.reduce_max(tf.abs(approx - exact)))
    assert 0 < error <= BFLOAT16_TOLERANCE * scale, (error, scale)  # > 0: bfloat16 really ran


@pytest.mark.parametrize("name", marked(["hit_tiny_32", "stylegan_d_tiny_32", "vqhit_tiny_32"]))
def test_xla_matches_graph_mode(name):
    factory, preset, make_inputs = MODELS[name]
    model = factory(preset)
    inputs = (make_inputs(model),)
    graph = tf.function(lambda *x: _output(model, x))(*inputs)
    xla = tf.function(lambda *x: _output(model, x), jit_compile=True)(*inputs)
    np.testing.assert_allclose(xla.numpy(), graph.numpy(), rtol=1e-4, atol=1e-4 * float(tf.reduce_max(abs(graph))))


def _mixed_step(task, batch):
    task.build(tf.distribute.get_strategy(), 4, jit_compile=False)
    step = tf.function(lambda: task.train_step(batch, tf.constant(0, tf.int64), tf.constant(0)))
    metrics = {k: float(v) for k, v in step().items()}
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    for item in task.checkpoint_items().values():
        assert {v.dtype for v in item.variables if v.dtype.startswith("float")} == {"float32"}
    return metrics


@pytest.mark.slow
def test_gan_task_bfloat16_step_is_finite_with_float32_variables():
    task = GANTask(generator_preset="hit_tiny_32", discriminator_preset="stylegan_d_tiny_32", precision="bfloat16")
    reals = tf.random.stateless_uniform([4, 32, 32, 3], [1, 2], -1.0, 1.0)
    metrics = _mixed_step(task, {"image": reals})
    assert metrics["r1_penalty"] > 0
    assert task.generator.compute_dtype == task.discriminator.compute_dtype == "bfloat16"
    assert task.eval_generator()[1].compute_dtype == "float32"


@pytest.mark.slow
def test_vqhit_task_bfloat16_step_is_finite_with_a_float32_quantizer():
    task = VQHiTTask(model_preset="vqhit_tiny_32", discriminator_preset="stylegan_d_tiny_32",
                     vgg_weights_path="random", precision="bfloat16")
    reals = tf.random.stateless_uniform([4, 32, 32, 3], [1, 2], -1.0, 1.0)
    metrics = _mixed_step(task, {"image": reals})
    assert metrics["perceptual_loss"] > 0 and metrics["perplexity"] >= 1
    assert task.model.compute_dtype == "bfloat16" and task.model.quantizer.compute_dtype == "float32"


@pytest.mark.slow
def test_float16_gan_steps_on_two_replicas_skip_together_and_checkpoint_the_loss_scale(tmp_path, two_replicas):
    """float16 under MirroredStrategy (Keras' merge_call path, as on GPUs). A step on finite images: finite losses,
    an update, float32 variables, equal replica copies. Then replica 1 alone sees NaN images: both replicas skip
    (weights and Adam's moments unchanged, copies equal), the loss scale halves and the step still counts; Keras'
    LossScaleOptimizer alone takes replica 0's verdict under merge_call and sums replica 1's NaN gradients into
    every weight. The scale is saved and restored with the optimizers."""
    task = GANTask(generator_preset="hit_tiny_32", discriminator_preset="stylegan_d_tiny_32", precision="float16")
    task.build(two_replicas, 4, jit_compile=False)
    assert task.generator.compute_dtype == task.discriminator.compute_dtype == "float16"
    assert isinstance(task.generator_optimizer, DynamicLossScale)
    reals = tf.random.stateless_uniform([2, 32, 32, 3], [1, 2], -1.0, 1.0)

    def batch(nan_replica=None):
        return two_replicas.experimental_distribute_values_from_function(
            lambda context: {"image": reals * (np.nan if context.replica_id_in_sync_group == nan_replica else 1.0)})

    @tf.function
    def step(batch):
        def replica_step(batch):
            replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
            return task.train_step(batch, tf.identity(task.global_step.value), tf.cast(replica_id, tf.int32))
        return two_replicas.run(replica_step, args=(batch,))

    def snapshot():  # D and its optimizer: a NaN real image makes D's gradients NaN, not G's
        return {v.path: [c.numpy() for c in v.value.values]
                for v in task.discriminator.trainable_variables + task.discriminator_optimizer.variables
                if v.dtype == "float32" and not v.path.endswith("dynamic_scale")}

    initial = snapshot()
    metrics = step(batch())
    local = [float(m) for value in metrics.values() for m in two_replicas.experimental_local_results(value)]
    assert np.isfinite(local).all(), metrics
    taken = snapshot()
    moved = [path for path in initial if not np.array_equal(taken[path][0], initial[path][0])]
    assert len(moved) > 0.9 * len(initial), sorted(set(initial) - set(moved))
    scale = float(task.discriminator_optimizer.dynamic_scale.numpy())
    assert scale == 2.0**15  # no overflow at the initial scale: the update above was taken
    for item in task.checkpoint_items().values():
        assert {v.dtype for v in item.variables if v.dtype.startswith("float")} == {"float32"}

    step(batch(nan_replica=1))
    for path, copies in snapshot().items():
        for copy in copies:  # every replica's copy is the one the first step left
            np.testing.assert_array_equal(copy, taken[path][0], err_msg=path)
    assert float(task.discriminator_optimizer.dynamic_scale.numpy()) == scale / 2
    assert int(task.discriminator_optimizer.iterations.numpy()) == 2  # the skipped step counted
    assert float(task.generator_optimizer.dynamic_scale.numpy()) == 2.0**15  # G's gradients were finite

    path = make_checkpoint(task.checkpoint_items()).save(str(tmp_path / "ckpt"))
    restored = GANTask(generator_preset="hit_tiny_32", discriminator_preset="stylegan_d_tiny_32", precision="float16")
    restored.build(tf.distribute.get_strategy(), 4, jit_compile=False)
    make_checkpoint(restored.checkpoint_items()).restore(path).assert_existing_objects_matched()
    assert float(restored.discriminator_optimizer.dynamic_scale.numpy()) == scale / 2
    assert int(restored.discriminator_optimizer.iterations.numpy()) == int(restored.global_step.numpy()) == 2


def test_r1_under_float16_takes_its_input_gradient_of_the_scaled_logits():
    """A D whose input gradient (4 * (2e-5)^2 per pixel) underflows in float16: R1 is 0 without the loss scale,
    and within float16's precision of the float32 value with it."""
    def discriminator():
        return keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(4, kernel_initializer=Constant(2e-5)),
                                 keras.layers.Dense(1, kernel_initializer=Constant(2e-5), dtype="float32")])

    images = tf.random.stateless_uniform([2, 8, 8, 3], [1, 2], -1.0, 1.0)
    exact = discriminator()
    with policy_scope("float16"):
        mixed = discriminator()
    expected = float(penalties.r1_penalty(exact, images)[1])
    assert expected == pytest.approx(192 * (4 * 2e-5**2) ** 2, rel=1e-3)
    assert float(penalties.r1_penalty(mixed, images)[1]) == 0.0  # underflow
    np.testing.assert_allclose(float(penalties.r1_penalty(mixed, images, tf.constant(2.0**15))[1]), expected,
                               rtol=1e-2)


@pytest.mark.slow
def test_gat_task_float16_step_is_finite_with_float32_variables():
    task = GATTask(generator_preset="gat_tiny", repa_weight=0.0, precision="float16")
    images = tf.random.stateless_normal([4, task.resolution, task.resolution, task.channels], [1, 2])
    metrics = _mixed_step(task, {"image": images, "label": tf.constant([0, 1, 2, 3])})
    assert metrics["ar1_penalty"] > 0 and task.discriminator.compute_dtype == "float16"
