"""Mixed precision and XLA for every model family (issue 14).

- bfloat16: each small preset built under the mixed_bfloat16 policy, given the float32 model's weights, keeps
  float32 variables and float32 outputs within a stated tolerance of the float32 model's (bfloat16 has an 8-bit
  mantissa: about 2-3 significant digits after a few layers);
- a train step of each task (GAN, VQ-HiT) under precision="bfloat16" has finite losses and leaves every
  variable float32 (graph mode, cheaper to build here; GAT's bfloat16 XLA step is tested in test_gat_task.py);
- XLA and graph mode give the same outputs (float32) for the small presets.
"""

import numpy as np
import pytest
import tensorflow as tf

from hit.models import get_discriminator, get_generator, get_vqhit
from hit.precision import policy_scope
from hit.tasks import GANTask
from hit.tasks.vqhit import VQHiTTask

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


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bfloat16_model_is_close_to_float32_with_float32_variables(name):
    model, mixed, inputs = _pair(name)
    assert mixed.compute_dtype == "bfloat16"
    assert {v.dtype for v in mixed.variables} == {"float32"}
    exact, approx = _output(model, inputs), _output(mixed, inputs)
    assert approx.dtype == tf.float32 and approx.shape == exact.shape
    scale = float(tf.reduce_max(tf.abs(exact)))
    error = float(tf.reduce_max(tf.abs(approx - exact)))
    assert 0 < error <= BFLOAT16_TOLERANCE * scale, (error, scale)  # > 0: bfloat16 really ran


@pytest.mark.parametrize("name", ["hit_tiny_32", "stylegan_d_tiny_32", "vqhit_tiny_32"])
def test_xla_matches_graph_mode(name):
    factory, preset, make_inputs = MODELS[name]
    model = factory(preset)
    inputs = (make_inputs(model),)
    graph = tf.function(lambda *x: _output(model, x))(*inputs)
    xla = tf.function(lambda *x: _output(model, x), jit_compile=True)(*inputs)
    np.testing.assert_allclose(xla.numpy(), graph.numpy(), rtol=1e-4, atol=1e-4 * float(tf.reduce_max(abs(graph))))


def _bfloat16_step(task, batch):
    task.build(tf.distribute.get_strategy(), 4, jit_compile=False)
    step = tf.function(lambda: task.train_step(batch, tf.constant(0, tf.int64), tf.constant(0)))
    metrics = {k: float(v) for k, v in step().items()}
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    for item in task.checkpoint_items().values():
        assert {v.dtype for v in item.variables if v.dtype.startswith("float")} == {"float32"}
    return metrics


def test_gan_task_bfloat16_step_is_finite_with_float32_variables():
    task = GANTask(generator_preset="hit_tiny_32", discriminator_preset="stylegan_d_tiny_32", precision="bfloat16")
    reals = tf.random.stateless_uniform([4, 32, 32, 3], [1, 2], -1.0, 1.0)
    metrics = _bfloat16_step(task, {"image": reals})
    assert metrics["r1_penalty"] > 0
    assert task.generator.compute_dtype == task.discriminator.compute_dtype == "bfloat16"
    assert task.eval_generator()[1].compute_dtype == "float32"


def test_vqhit_task_bfloat16_step_is_finite_with_a_float32_quantizer():
    task = VQHiTTask(model_preset="vqhit_tiny_32", discriminator_preset="stylegan_d_tiny_32",
                     vgg_weights_path="random", precision="bfloat16")
    reals = tf.random.stateless_uniform([4, 32, 32, 3], [1, 2], -1.0, 1.0)
    metrics = _bfloat16_step(task, {"image": reals})
    assert metrics["perceptual_loss"] > 0 and metrics["perplexity"] >= 1
    assert task.model.compute_dtype == "bfloat16" and task.model.quantizer.compute_dtype == "float32"


@pytest.mark.parametrize("task_class", [GANTask, VQHiTTask])
def test_float16_is_refused_with_the_reason(task_class):
    kwargs = dict(generator_preset="hit_tiny_32", discriminator_preset="stylegan_d_tiny_32")
    if task_class is VQHiTTask:
        kwargs = dict(model_preset="vqhit_tiny_32", discriminator_preset="stylegan_d_tiny_32",
                      perceptual_weight=0.0)
    with pytest.raises(ValueError, match="float16' would need loss scaling"):
        task_class(precision="float16", **kwargs)
