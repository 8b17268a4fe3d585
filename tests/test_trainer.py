"""The trainer and the GAN task: an XLA run end to end, equality across strategies and across resume,
the non-finite stop, and the optional update schemes."""

import glob
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from hit.data.pipeline import DataSource, make_train_dataset
from hit.tasks.gan import GANTask
from hit.train.trainer import NonFiniteLossError, Trainer

TINY = dict(generator_preset="hit_tiny_32", discriminator_preset="stylegan_d_tiny_32", bcr_weight=10.0)


def make_trainer(model_dir, train_steps=2, strategy=None, task_kwargs=None, **trainer_kwargs):
    task = GANTask(**{**TINY, **(task_kwargs or {})})
    settings = dict(global_batch_size=4, steps_per_loop=2, checkpoint_every=2, sample_every=0, jit_compile=False)
    settings.update(trainer_kwargs)
    return task, Trainer(task=task, model_dir=str(model_dir), strategy=strategy, train_steps=train_steps, **settings)


def all_variables(task):
    """Every model and optimizer variable, keyed by a name that does not depend on the run."""
    out = {}
    for name, item in task.checkpoint_items().items():
        for i, v in enumerate(item.variables):
            out[f"{name}/{i}/{v.path.split('/', 1)[-1]}"] = v.numpy()
    return out


def event_tags(model_dir):
    tags = set()
    for path in glob.glob(os.path.join(model_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    return tags


@pytest.mark.slow
def test_short_xla_run_writes_checkpoints_events_samples_and_config(tmp_path):
    task, trainer = make_trainer(tmp_path, train_steps=4, jit_compile=True, sample_every=4, num_samples=4)
    metrics = trainer.train()
    assert set(metrics) == set(GANTask.metric_names)
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["r1_penalty"] > 0 and metrics["bcr_loss"] > 0
    assert int(task.global_step.numpy()) == 4
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-4")
    assert os.path.exists(tmp_path / "ckpt-2.index")
    # Every variable of every model is in the checkpoint: BatchNorm statistics and the whole EMA generator
    # too (Keras 3 layer lists are invisible to a plain tf.train.Checkpoint of the model object).
    saved = [name for name, _ in tf.train.list_variables(str(tmp_path / "ckpt-4"))]
    for name, item in task.checkpoint_items().items():
        if isinstance(item, keras.Model):
            assert sum(n.startswith(name + "/") for n in saved) == len(item.variables), name
    assert {"train/d_loss", "train/g_loss", "train/r1_penalty", "train/bcr_loss", "train/generator_lr",
            "train/discriminator_lr", "train/images_per_sec", "train/steps_per_sec", "samples/ema_generator",
            "gin/config", "gin/operative_config"} <= event_tags(str(tmp_path))
    png = tf.io.decode_png(tf.io.read_file(str(tmp_path / "samples" / "latest.png"))).numpy()
    assert png.shape == (64, 64, 3)
    assert (tmp_path / "samples" / "step_00000004.png").exists()
    assert (tmp_path / "operative_config.gin").exists() and (tmp_path / "config.gin").exists()
    # The per-replica step really is an XLA computation (what TPUs need): it lowers to HLO.
    hlo = task._simultaneous_gradients.experimental_get_compiler_ir(
        tf.zeros([4, 32, 32, 3]), tf.constant(4, tf.int64), tf.constant(0))(stage="hlo")
    assert "HloModule" in hlo


@pytest.mark.slow
def test_one_step_on_two_replicas_equals_one_replica_with_the_same_global_batch(tmp_path, two_replicas):
    """LayerNorm, because BatchNorm normalises over each replica's own batch: with BN the two runs differ
    by design (as on the official TPU runs, where statistics are per core). Adam's epsilon is raised to 1
    so its update is nearly linear in the gradient: a loss not scaled by 1/replicas would then show up,
    where plain Adam is invariant to the gradient's scale."""
    task_kwargs = dict(generator_overrides={"norm_type": "layer"}, adam_epsilon=1.0)
    results = []
    for name, strategy in [("one", tf.distribute.get_strategy()),
                           ("two", two_replicas)]:
        keras.utils.set_random_seed(7)
        task, trainer = make_trainer(tmp_path / name, train_steps=1, strategy=strategy, task_kwargs=task_kwargs,
                                     steps_per_loop=1, checkpoint_every=1)
        assert strategy.num_replicas_in_sync == (1 if name == "one" else 2)
        keras.utils.set_random_seed(7)
        metrics = trainer.train()
        weights = {k: v for k, v in all_variables(task).items() if "optimizer" not in k}
        results.append((metrics, weights))
    (metrics_1, weights_1), (metrics_2, weights_2) = results
    for key in metrics_1:
        np.testing.assert_allclose(metrics_1[key], metrics_2[key], rtol=1e-4, atol=1e-6, err_msg=key)
    keras.utils.set_random_seed(7)
    initial = get_initial_generator_weights()
    changed = 0
    for key, value in weights_1.items():
        np.testing.assert_allclose(value, weights_2[key], rtol=1e-5, atol=1e-7, err_msg=key)
        if key.startswith("generator/") and key in initial and not np.array_equal(value, initial[key]):
            changed += 1
    assert changed > 0  # the step did move the generator


def get_initial_generator_weights():
    """The weights the generator starts from under the same seed (to check the step moved them)."""
    from hit.models.presets import get_generator

    generator = get_generator("hit_tiny_32", norm_type="layer")
    return {f"generator/{i}/{v.path.split('/', 1)[-1]}": v.numpy() for i, v in enumerate(generator.variables)}


@pytest.mark.slow
def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path, stopped_run):
    task_kwargs = dict(ema_start_step=1)  # so the EMA generator is exercised too
    keras.utils.set_random_seed(3)
    straight, trainer = make_trainer(tmp_path / "straight", train_steps=4, task_kwargs=task_kwargs)
    trainer.train()
    stopped_run(tmp_path / "straight", 2, tmp_path / "resumed")  # the run as if preempted after step 2
    keras.utils.set_random_seed(99)  # a resumed process starts from other random weights; the checkpoint wins
    resumed, trainer = make_trainer(tmp_path / "resumed", train_steps=4, task_kwargs=task_kwargs)
    trainer.train()
    a, b = all_variables(resumed), all_variables(straight)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert int(resumed.global_step.numpy()) == 4


@pytest.mark.slow
def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    make_trainer(tmp_path, train_steps=2)[1].train()

    def poisoned(context, global_batch_size, seed, start_step):
        dataset = make_train_dataset(context, global_batch_size, seed, start_step)
        return dataset.map(lambda b: {"image": b["image"] * np.nan})

    _, trainer = make_trainer(tmp_path, train_steps=4, dataset_fn=poisoned)
    with pytest.raises(NonFiniteLossError, match=r"non-finite .*d_loss.* in steps 3-4; training stopped") as info:
        trainer.train()
    assert "\n" not in str(info.value)
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-2")
    assert not glob.glob(str(tmp_path / "ckpt-4*"))


@pytest.mark.slow
@pytest.mark.parametrize("task_kwargs", [
    dict(update="alternating"),
    dict(r1_interval=2, loss_type="hinge", bcr_weight=0.0),
], ids=["alternating", "lazy_r1_hinge"])
def test_optional_update_schemes_train(tmp_path, task_kwargs):
    task, trainer = make_trainer(tmp_path, train_steps=2, task_kwargs=task_kwargs, steps_per_loop=1)
    metrics = trainer.train()
    assert all(math.isfinite(v) for v in metrics.values())
    assert int(task.global_step.numpy()) == 2


def test_bad_task_and_trainer_settings_are_one_line_errors(tmp_path, two_replicas):
    with pytest.raises(ValueError, match="unknown update scheme 'sometimes'"):
        GANTask(**TINY, update="sometimes")
    with pytest.raises(ValueError, match="unknown generator preset"):
        GANTask(**{**TINY, "generator_preset": "hit_huge"})
    with pytest.raises(ValueError, match="unknown augmentation"):
        GANTask(**TINY, augment_policy="color,rotate")
    with pytest.raises(ValueError, match="Trainer.train_steps must be positive"):
        make_trainer(tmp_path, train_steps=0)
    with pytest.raises(ValueError, match=r"bad BatchNorm group size: 0 \(a positive integer or None\)"):
        GANTask(**TINY, bn_group_size=0)
    _, trainer = make_trainer(tmp_path / "groups", task_kwargs=dict(bn_group_size=8))
    with pytest.raises(ValueError, match=r"^GANTask.bn_group_size 8 does not divide the per-replica batch 4 "
                                         r"\(global 4 over 1 replica\); choose a divisor, e.g. "
                                         r"--gin_param='GANTask.bn_group_size = 4'$"):
        trainer.train()
    task, trainer = make_trainer(tmp_path, global_batch_size=3, strategy=two_replicas)
    with pytest.raises(ValueError, match="global batch 3 does not split over 2 replicas"):
        trainer.train()


@pytest.mark.slow
def test_skipped_images_are_reported_to_tensorboard(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        tf.io.write_file(str(images / f"{i}.png"), tf.io.encode_png(np.full((32, 32, 3), 40 * i, np.uint8)))
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but cut short")
    source = DataSource(name="folder", data_dir=str(images), resolution=32)

    def folder_data(context, global_batch_size, seed, start_step):
        return source.train_dataset(context, global_batch_size, seed, start_step)

    make_trainer(tmp_path / "run", train_steps=1, steps_per_loop=1, dataset_fn=folder_data)[1].train()
    assert "data/skipped_images" in event_tags(str(tmp_path / "run"))


@pytest.mark.slow
def test_single_channel_images_train(tmp_path):
    source = DataSource(name="random", resolution=32, channels=1)
    task, trainer = make_trainer(
        tmp_path, train_steps=1, steps_per_loop=1,
        task_kwargs=dict(generator_overrides={"output_channels": 1}, discriminator_overrides={"image_channels": 1}),
        dataset_fn=lambda context, batch, seed, start_step: source.train_dataset(context, batch, seed, start_step))
    metrics = trainer.train()
    assert all(math.isfinite(v) for v in metrics.values())
    assert task.sample_images(2).shape == (2, 32, 32, 1)
