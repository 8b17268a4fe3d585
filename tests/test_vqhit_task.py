"""The VQ-HiT task in the generic trainer: the losses of eqs. 4-5 as composed, codebook usage over the global
batch, 2 replicas, resume equal to an uninterrupted run, input|reconstruction samples, and config errors."""

import math

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from hit.configs import parse_gin
from hit.data.pipeline import DataSource
from hit.layers.quantizer import code_counts, code_usage
from hit.tasks.vqhit import VQHiTTask
from hit.train.trainer import Trainer

TINY = dict(model_preset="vqhit_tiny_32", discriminator_preset="stylegan_d_tiny_32", perceptual_weight=0.0)


def make_trainer(model_dir, train_steps=2, strategy=None, task_kwargs=None, **trainer_kwargs):
    task = VQHiTTask(**{**TINY, **(task_kwargs or {})})
    settings = dict(global_batch_size=4, steps_per_loop=2, checkpoint_every=2, sample_every=0, jit_compile=False)
    settings.update(trainer_kwargs)
    return task, Trainer(task=task, model_dir=str(model_dir), strategy=strategy, train_steps=train_steps, **settings)


def all_variables(task):
    return {f"{name}/{i}/{v.path.split('/', 1)[-1]}": v.numpy()
            for name, item in task.checkpoint_items().items() for i, v in enumerate(item.variables)}


@pytest.mark.slow
def test_one_xla_step_composes_the_papers_losses(tmp_path):
    """ae_total = L2 + 5e-5 * perceptual + 0.1 * NS_G + codebook + commitment; d_total = NS_D + 10 * R1;
    with an untrained VGG so the perceptual term is on."""
    keras.utils.set_random_seed(1)
    task, trainer = make_trainer(tmp_path, train_steps=1, steps_per_loop=1, jit_compile=True,
                                 task_kwargs=dict(perceptual_weight=5e-5, vgg_weights_path="random"))
    m = trainer.train()
    assert set(m) == set(VQHiTTask.metric_names)
    assert m["perceptual_loss"] > 0 and m["reconstruction_loss"] > 0 and m["r1_penalty"] > 0
    expected = (m["reconstruction_loss"] + 5e-5 * m["perceptual_loss"] + 0.1 * m["g_loss"] + m["codebook_loss"]
                + m["commitment_loss"])
    assert m["ae_total_loss"] == pytest.approx(expected, rel=1e-5)
    assert m["d_total_loss"] == pytest.approx(m["d_loss"] + 10.0 * m["r1_penalty"], rel=1e-5)
    assert m["commitment_loss"] == pytest.approx(0.25 * m["codebook_loss"], rel=1e-4)  # same distance, beta
    assert 1.0 <= m["perplexity"] <= 32 and 0.0 <= m["unused_codes"] < 1.0
    assert int(task.global_step.numpy()) == 1 and int(task.discriminator_optimizer.iterations.numpy()) == 1
    assert not task.vgg.model.trainable_variables  # the VGG is never trained


@pytest.mark.slow
def test_two_replicas_count_codes_over_the_global_batch_and_keep_equal_copies(tmp_path, two_replicas):
    """One step on 2 replicas, replica r on rows [2r, 2r + 2) of 4 images, the decoder's BatchNorm in groups of 2:
    finite losses; both replicas hold the same decoder statistics (their mean) and codebook; the reported
    perplexity and unused fraction are those of the 4 images' codes under the initial weights, not a mean of the
    two halves'."""
    images = tf.random.stateless_uniform([4, 32, 32, 3], [7, 8], -1.0, 1.0)

    def fixed_images(context, global_batch_size, seed, start_step):
        per_replica = context.get_per_replica_batch_size(global_batch_size)
        return tf.data.Dataset.from_tensor_slices({"image": images}).batch(per_replica, drop_remainder=True).repeat()

    task, trainer = make_trainer(tmp_path, train_steps=1, steps_per_loop=1, dataset_fn=fixed_images,
                                 strategy=two_replicas, task_kwargs=dict(autoencoder_lr=0.0, bn_group_size=2))
    metrics = trainer.train()
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    for v in task.model.non_trainable_variables + [task.model.quantizer.codebook]:
        copies = [c.numpy() for c in v.value.values]
        assert np.array_equal(copies[0], copies[1]), v.path
    codes = task.model.encode(images)  # the step's codes: autoencoder_lr 0 leaves encoder and codebook unchanged
    expected = [float(x) for x in code_usage(code_counts(codes, 32))]
    np.testing.assert_allclose([metrics["perplexity"], metrics["unused_codes"]], expected, rtol=1e-5)
    halves = [[float(x) for x in code_usage(code_counts(codes[r * 2:][:2], 32))] for r in range(2)]
    assert expected != pytest.approx(np.mean(halves, axis=0).tolist())  # what counting per replica would give


@pytest.mark.slow
def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path, stopped_run):
    keras.utils.set_random_seed(3)
    straight, trainer = make_trainer(tmp_path / "straight", train_steps=4)
    trainer.train()
    stopped_run(tmp_path / "straight", 2, tmp_path / "resumed")  # the run as if preempted after step 2
    keras.utils.set_random_seed(99)  # a resumed process starts from other random weights; the checkpoint wins
    resumed, trainer = make_trainer(tmp_path / "resumed", train_steps=4)
    trainer.train()
    a, b = all_variables(resumed), all_variables(straight)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert int(resumed.global_step.numpy()) == 4


@pytest.mark.slow
def test_samples_are_input_and_reconstruction_side_by_side(tmp_path):
    task, trainer = make_trainer(tmp_path, train_steps=1, steps_per_loop=1)
    trainer.train()
    panel = task.sample_images(3, trainer.real_images_fn)  # the trainer's: the run's first eval images
    assert panel.shape == (3, 32, 64, 3)
    np.testing.assert_array_equal(panel[:, :, :32].numpy(), trainer.real_images_fn(3).numpy())
    expected = tf.clip_by_value(task.model(panel[:, :, :32], training=False), -1.0, 1.0)
    np.testing.assert_allclose(panel[:, :, 32:].numpy(), expected.numpy(), atol=1e-6)
    assert task.sample_name == "input_reconstruction"


@pytest.mark.slow
def test_bad_settings_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match=r"^VQHiTTask.perceptual_weight > 0 needs VQHiTTask.vgg_weights_path"):
        VQHiTTask(**{**TINY, "perceptual_weight": 5e-5})
    with pytest.raises(ValueError, match="unknown VQ-HiT preset 'vqhit_xl'"):
        VQHiTTask(**{**TINY, "model_preset": "vqhit_xl"})
    _, trainer = make_trainer(tmp_path, task_kwargs=dict(bn_group_size=8))
    with pytest.raises(ValueError, match=r"^VQHiTTask.bn_group_size 8 does not divide the per-replica batch 4 "):
        trainer.train()
    _, trainer = make_trainer(tmp_path / "vgg", task_kwargs=dict(perceptual_weight=1e-5,
                                                                 vgg_weights_path=str(tmp_path / "none.h5")))
    with pytest.raises(ValueError, match="none.h5"):
        trainer.train()


@pytest.mark.slow
def test_the_demo_config_overfits_a_handful_of_images():
    """The demo's task (gin/demo/vqhit_fashion_mnist_32.gin, all its losses) on 8 Fashion-MNIST images: the
    reconstruction error falls well below its start within 100 steps."""
    gin.clear_config()
    parse_gin(["gin/demo/vqhit_fashion_mnist_32.gin"], [])
    images = next(iter(DataSource().eval_dataset(8, 8)))["image"]
    keras.utils.set_random_seed(0)
    task = VQHiTTask()
    gin.clear_config()
    task.build(tf.distribute.get_strategy(), 8, jit_compile=False)

    def error():
        return float(tf.reduce_mean(tf.square(task.model(images, training=False) - images)))

    step = tf.function(lambda s: task.train_step({"image": images}, s, 0))
    start = error()
    for i in range(100):
        metrics = step(tf.constant(i, tf.int64))
    assert error() < 0.3 * start, (start, error())
    assert float(metrics["perceptual_loss"]) == 0.0 and float(metrics["g_loss"]) > 0
