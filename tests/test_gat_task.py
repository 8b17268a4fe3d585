"""The GAT task in the generic trainer (official GAT train.py, losses/Rp_PT_loss.py): the demo config
(gin/demo/gat_fashion_mnist_32.gin) with finite losses, its D loss as composed, 2 replicas equal to one device,
resume equal to an uninterrupted run; on a tiny latent preset with REPA: a bfloat16 XLA step; REPA's targets and its
missing-feature error, the EMA and w_avg, samples, and config errors."""

import math

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from hit.configs import parse_gin
from hit.core.seeds import seed_latents, seed_range
from hit.models.presets import get_discriminator
from hit.tasks.gat import GATTask
from hit.train.precision import float32_compute, policy_scope
from hit.train.trainer import Trainer

RESOLUTION, CLASSES, GRID, DINO = 16, 10, 8, 16  # the gat_tiny preset: 16x16x4 latents, 8x8 patches, REPA 16 wide


def latent_batches(context, global_batch_size, seed, start_step, features=True):
    """Per-replica batches of element-indexed random latents, labels and DINOv2-like features (resumable)."""
    del seed
    per_replica = context.get_per_replica_batch_size(global_batch_size)
    start = start_step * global_batch_size

    def element(i):
        key = tf.stack([tf.constant(7, tf.int64), i])
        out = {"latent": tf.random.stateless_normal([RESOLUTION, RESOLUTION, 4], key),
               "label": i % CLASSES}
        if features:
            out["dino_cls"] = tf.random.stateless_normal([DINO], key + 1)
            out["dino_patches"] = tf.random.stateless_normal([GRID * GRID, DINO], key + 2)
        return out

    dataset = tf.data.Dataset.range(start, 2**40).shard(context.num_input_pipelines, context.input_pipeline_id)
    return dataset.map(element).batch(per_replica, drop_remainder=True)


def make_trainer(model_dir, train_steps=2, strategy=None, task_kwargs=None, features=True, **trainer_kwargs):
    task = GATTask(generator_preset="gat_tiny", **(task_kwargs or {}))
    settings = dict(global_batch_size=4, steps_per_loop=2, checkpoint_every=2, sample_every=0, jit_compile=False,
                    dataset_fn=lambda *args, **kwargs: latent_batches(*args, **kwargs, features=features))
    settings.update(trainer_kwargs)
    return task, Trainer(task=task, model_dir=str(model_dir), strategy=strategy, train_steps=train_steps, **settings)


def all_variables(task):
    return {f"{name}/{i}/{v.path.split('/', 1)[-1]}": v.numpy()
            for name, item in task.checkpoint_items().items() for i, v in enumerate(item.variables)}


# GATTask.epsilon: torch's AdamW epsilon (1e-8 after the bias correction) moves a weight whose gradient is float
# noise (D's final bias: real and fake logits share it and it cancels) by up to lr; 1e-6 keeps such weights still,
# so the replica and resume comparisons below see the steps' arithmetic, not Adam's amplification of noise.
DEMO_SETTINGS = ["Trainer.train_steps = 2", "Trainer.global_batch_size = 4", "Trainer.steps_per_loop = 1",
                 "Trainer.checkpoint_every = 1", "Trainer.jit_compile = False", "Trainer.sample_every = 0",
                 "GATTask.epsilon = 1e-6"]


def demo_trainer(model_dir, strategy=None):
    """gin/demo/gat_fashion_mnist_32.gin (pixel space, Fashion-MNIST's labels, no REPA), two steps of 4."""
    parse_gin(["gin/demo/gat_fashion_mnist_32.gin"], DEMO_SETTINGS)
    trainer = Trainer(model_dir=str(model_dir), strategy=strategy)
    return trainer.task, trainer


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The demo config, two steps on one device, uninterrupted: (task, last metrics, model_dir)."""
    keras.utils.set_random_seed(3)
    model_dir = tmp_path_factory.mktemp("straight")
    task, trainer = demo_trainer(model_dir)
    metrics = trainer.train()
    gin.clear_config()
    return task, metrics, model_dir


@pytest.mark.slow
def test_the_demo_step_composes_the_losses(straight):
    task, m, _ = straight
    assert set(m) == set(GATTask.metric_names) and all(math.isfinite(v) for v in m.values()), m
    assert m["repa_loss"] == 0.0 and m["ar1_penalty"] > 0 and m["ar2_penalty"] > 0
    expected = m["d_loss"] + 1.0 * m["ar1_penalty"] + 1.0 * m["ar2_penalty"]  # the demo's penalty weights
    assert m["d_total_loss"] == pytest.approx(expected, rel=1e-5)
    assert m["g_hidden_std"] > 0 and m["d_hidden_std"] > 0 and task.generator.output_channels == 1
    assert int(task.global_step.numpy()) == 2 and int(task.discriminator_optimizer.iterations.numpy()) == 2


@pytest.mark.slow
def test_two_replicas_equal_one_device(straight, tmp_path, two_replicas):
    one = straight[0]
    keras.utils.set_random_seed(3)
    two, trainer = demo_trainer(tmp_path, two_replicas)
    metrics = trainer.train()
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    single, mirrored = all_variables(one), all_variables(two)
    # Adam's first steps move every weight by about lr (1e-3) whatever its gradient's size, so float noise in the
    # tiny gradients of a few weights shows (at most 2 lr: a flipped sign; 8.6e-4 seen on an AMD EPYC), and the
    # summation order of two replicas moves small weights by a few 1e-5; a wrong split of the batch or of the
    # random draws moves them all by about lr.
    for key, value in single.items():
        close = np.isclose(mirrored[key], value, rtol=1e-4, atol=1e-4)
        assert close.mean() > 0.95 and np.abs(mirrored[key] - value).max() < 2.1e-3, (
            key, close.mean(), np.abs(mirrored[key] - value).max())
    w_avg = two.generator.w_avg.value.values  # each replica wrote the global batch's class means
    np.testing.assert_array_equal(w_avg[0], w_avg[1])
    assert np.count_nonzero(np.abs(single["generator/0/w_avg"]).sum(1)) > 1


@pytest.mark.slow
def test_stop_and_resume_equals_an_uninterrupted_run(straight, tmp_path, stopped_run):
    stopped_run(straight[2], 1, tmp_path / "resumed")  # the uninterrupted run as if preempted after step 1
    keras.utils.set_random_seed(6)  # other fresh weights: the checkpoint must overwrite them all
    resumed, trainer = demo_trainer(tmp_path / "resumed")
    trainer.train()
    expected, got = all_variables(straight[0]), all_variables(resumed)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


@pytest.mark.slow
def test_the_ema_starts_as_a_copy_and_copies_w_avg(straight):
    task = straight[0]
    np.testing.assert_array_equal(task.ema_generator.w_avg.numpy(), task.generator.w_avg.numpy())
    fresh = GATTask(generator_preset="gat_tiny", ema_decay=0.5)
    fresh.build(tf.distribute.get_strategy(), 4)
    for ema, source in zip(fresh.ema_generator.variables, fresh.generator.variables):
        np.testing.assert_array_equal(ema.numpy(), source.numpy())
    # After two steps of decay 0.999 from the copy, the EMA is close to the first weights, not the current ones.
    ema, current = task.ema_generator.trainable_variables[0].numpy(), task.generator.trainable_variables[0].numpy()
    assert not np.array_equal(ema, current)


def test_repa_targets_follow_the_flip():
    task = GATTask(generator_preset="gat_tiny")
    cls, patches = tf.reshape(tf.range(4 * 2.0), [2, 4]), tf.reshape(tf.range(2 * 4 * 3.0), [2, 4, 3])
    batch = {"dino_cls": cls, "dino_patches": patches}
    target_cls, target_patches = task._repa_targets(batch, tf.constant([False, True]))
    np.testing.assert_array_equal(target_cls, cls)
    np.testing.assert_array_equal(target_patches[0], patches[0])
    np.testing.assert_array_equal(target_patches[1], tf.reshape(tf.reverse(tf.reshape(patches[1], [2, 2, 3]), [1]),
                                                                [4, 3]))
    stored = {**batch, "dino_cls_flip": -cls, "dino_patches_flip": -patches}  # the mirror image's own features
    target_cls, target_patches = task._repa_targets(stored, tf.constant([False, True]))
    np.testing.assert_array_equal(target_cls, [cls[0], -cls[1]])
    np.testing.assert_array_equal(target_patches, [patches[0], -patches[1]])


def test_one_eager_step_of_the_tiny_task_moves_both_models():
    """The fast tier's GAT step: GATTask.train_step once, eagerly, with REPA: finite metrics, G and D updated."""
    task = GATTask(generator_preset="gat_tiny")
    task.build(tf.distribute.get_strategy(), 2, jit_compile=False)
    models = (task.generator, task.discriminator)
    before = [[v.numpy() for v in model.trainable_variables] for model in models]
    batch = next(iter(latent_batches(tf.distribute.InputContext(), 2, 0, 0)))
    metrics = task.train_step(batch, tf.constant(0, tf.int64), 0)
    assert np.isfinite([float(value) for value in metrics.values()]).all(), metrics
    for model, values in zip(models, before):
        assert any(not np.array_equal(a, v.numpy()) for a, v in zip(values, model.trainable_variables)), model.name


@pytest.mark.slow
def test_repa_without_features_is_a_one_line_error():
    task = GATTask(generator_preset="gat_tiny")
    task.build(tf.distribute.get_strategy(), 4, jit_compile=False)
    batch = next(iter(latent_batches(tf.distribute.InputContext(), 4, 0, 0, features=False)))
    with pytest.raises(ValueError, match="REPA needs DINOv2 features in the data"):
        task.train_step(batch, tf.constant(0, tf.int64), 0)
    assert GATTask(generator_preset="gat_tiny", repa_weight=0.0).discriminator_overrides == {"repa": False}


@pytest.mark.slow
def test_samples_are_decoded_and_classes_in_turn(straight):
    task = straight[0]
    images = task.sample_images(12)
    assert images.shape == (12, 32, 32, 1)  # pixel space: the identity decoder
    assert float(tf.reduce_max(tf.abs(images))) <= 1.0
    # Sample i is G(z of seed i, class of seed i = i % 10), truncated by sample_psi (hit.models.samples).
    z = seed_latents(seed_range(0, 12), task.latent_dim)
    labels = tf.constant([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])
    expected = task.ema_generator(z, labels, truncation_psi=task.sample_psi, training=False)
    np.testing.assert_allclose(images, tf.clip_by_value(expected, -1.0, 1.0), atol=1e-5)


@pytest.mark.slow
def test_bfloat16_xla_step_with_repa_keeps_float32_variables_and_penalties(tmp_path):
    task, trainer = make_trainer(tmp_path, train_steps=1, steps_per_loop=1, jit_compile=True,
                                 task_kwargs=dict(precision="bfloat16"))
    m = trainer.train()
    assert set(m) == set(GATTask.metric_names) and all(math.isfinite(v) for v in m.values()), m
    assert m["repa_loss"] > 0 and m["ar1_penalty"] > 0 and m["ar2_penalty"] > 0
    expected = m["d_loss"] + 0.05 * m["ar1_penalty"] + 0.05 * m["ar2_penalty"] + 1.0 * m["repa_loss"]
    assert m["d_total_loss"] == pytest.approx(expected, rel=1e-5)
    # Width-aware learning rates (official GAT train.py): 2e-4 * 768 / 32 for both tiny models.
    assert float(task.generator_optimizer.learning_rate) == pytest.approx(2e-4 * 768 / 32)
    assert float(task.discriminator_optimizer.learning_rate) == pytest.approx(2e-4 * 768 / 32)
    assert task.discriminator.compute_dtype == "bfloat16"
    assert {v.dtype for v in task.generator.variables + task.discriminator.variables} == {"float32"}
    with policy_scope("bfloat16"):
        d = get_discriminator("gat_tiny")
    stacked, labels = tf.random.normal([2, RESOLUTION, RESOLUTION, 16]), tf.constant([0, 1])
    with float32_compute(d):
        exact = d.forward_with_features(stacked, labels)["hidden"]
    assert exact.dtype == tf.float32 and d.forward_with_features(stacked, labels)["hidden"].dtype == tf.bfloat16
    assert d.compute_dtype == "bfloat16"  # restored after the context


@pytest.mark.parametrize("kwargs, message", [
    (dict(generator_preset="hit_demo_32"), "must name a GAT preset"),
    (dict(generator_preset="gat_tiny", precision="float64"), "unknown precision"),
    (dict(generator_preset="gat_tiny", noise_levels=(0.5, 0.1)), "needs 4 levels"),
    (dict(generator_preset="gat_tiny", flip_probability=2.0), "probabilities must be in"),
])
def test_bad_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GATTask(**kwargs)

