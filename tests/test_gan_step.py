"""One whole GANTask step against a slow, hand-written reference of the official step (hit-gan
trainers/gan_trainer.py `_train_one_step`, `_update_ema_model`).

The reference, on one device with the global batch: D's gradient of NS + 10 R1 + 10 bCR and G's gradient of
NS, both from the pre-update weights; Adam(beta1 0, beta2 0.99, eps 1e-7) written out in numpy; then the EMA of
every generator variable, BatchNorm statistics included. The generator normalises over groups of 2 samples,
the population each of 2 replicas sees, so one reference covers:
- the Trainer on 1 replica with bn_group_size 2,
- the Trainer on 2 replicas with no groups: BatchNorm statistics per replica, averaged over replicas,
- the whole replica step compiled as ONE XLA computation (what a TPU runs), EMA included.
Every variable is compared after the step.
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from hit.core.seeds import stateless_normal, stateless_seed
from hit.gan import augment
from hit.tasks.gan import GANTask
from hit.train.trainer import Trainer

BATCH, SIZE, SEED, LR, DECAY, WEIGHT = 4, 32, 0, 1e-4, 0.99, 10.0
REALS = tf.random.stateless_uniform([BATCH, SIZE, SIZE, 3], [1, 2], -1.0, 1.0)


def make_task(bn_group_size):
    # ema_start_step 0: the first step already averages (the hard copy is tested in test_ema.py).
    return GANTask(generator_preset="hit_tiny_32", discriminator_preset="stylegan_d_tiny_32", bcr_weight=WEIGHT,
                   r1_weight=WEIGHT, generator_lr=LR, discriminator_lr=LR, ema_decay=DECAY, ema_start_step=0,
                   bn_group_size=bn_group_size)


def fixed_reals(context, global_batch_size, seed, start_step):
    """Replica r gets rows [r * B/R, (r + 1) * B/R) of REALS (one pipeline feeds the replicas in turn)."""
    per_replica = context.get_per_replica_batch_size(global_batch_size)
    return tf.data.Dataset.from_tensor_slices({"image": REALS}).batch(per_replica, drop_remainder=True).repeat()


def snapshot(task):
    """{name: value} of every variable of the task's checkpoint (models and optimizers)."""
    return {f"{name}/{v.path.split('/', 1)[-1]}": v.numpy() for name, item in task.checkpoint_items().items()
            for v in item.variables}


def reference_step():
    """(initial variables, reference gradients, reference BatchNorm statistics) of one official step on one
    device with the global batch, from the same initial weights."""
    keras.utils.set_random_seed(7)
    task = make_task(bn_group_size=2)
    task.build(tf.distribute.get_strategy(), BATCH, SEED, jit_compile=False)
    initial = snapshot(task)
    G, D = task.generator, task.discriminator
    z = stateless_normal([BATCH, G.latent_dim], stateless_seed("step", SEED, 0, 0))
    draws = [augment.draw_augment_params(stateless_seed("step", SEED, 0, stream), BATCH, SIZE, SIZE,
                                         task.augment_policy) for stream in (1, 2)]
    with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
        fakes = G(z, training=True)
        fake_logits = D(fakes, training=True)
        with tf.GradientTape() as r1_tape:
            r1_tape.watch(REALS)
            real_logits = D(REALS, training=True)
        r1 = tf.reduce_mean(tf.reduce_sum(r1_tape.gradient(real_logits, REALS) ** 2, axis=[1, 2, 3]))
        augmented = tf.stop_gradient(tf.concat([augment.apply_augment(REALS, draws[0]),
                                                augment.apply_augment(fakes, draws[1])], axis=0))
        augmented_logits = D(augmented, training=True)
        bcr = (tf.reduce_mean((real_logits - augmented_logits[:BATCH]) ** 2)
               + tf.reduce_mean((fake_logits - augmented_logits[BATCH:]) ** 2))
        d_loss = tf.reduce_mean(tf.nn.softplus(-real_logits)) + tf.reduce_mean(tf.nn.softplus(fake_logits))
        d_total = d_loss + WEIGHT * r1 + WEIGHT * bcr
        g_loss = tf.reduce_mean(tf.nn.softplus(-fake_logits))
    assert r1 > 0 and bcr > 0
    gradients = {}
    for name, model, loss, tape in [("generator", G, g_loss, g_tape), ("discriminator", D, d_total, d_tape)]:
        for v, g in zip(model.trainable_variables, tape.gradient(loss, model.trainable_variables)):
            gradients[f"{name}/{v.path.split('/', 1)[-1]}"] = (v.path, g.numpy())
    statistics = {f"generator/{v.path.split('/', 1)[-1]}": v.numpy() for v in G.non_trainable_variables}
    return initial, gradients, statistics


@pytest.fixture(scope="module")
def reference():
    return reference_step()


def compare(actual, reference):
    """Every variable after the step: Adam's slots hold the reference gradient (beta1 = 0: m = g, v = 0.01 g^2),
    each weight moved by Adam's formula, BatchNorm statistics as the reference's forward pass left them, and the
    EMA generator one decay step from its initial value towards the new generator.

    Gradients are compared with a tolerance of 1e-5 of the largest gradient of their model: the bias of a layer
    followed by BatchNorm has a zero gradient in exact arithmetic, so its computed gradient is rounding noise,
    and Adam's first step turns any nonzero noise into a step of up to the learning rate."""
    initial, gradients, statistics = reference
    assert actual.keys() == initial.keys()
    checked = set()
    scale = {name: max(np.abs(g).max() for key, (_, g) in gradients.items() if key.startswith(name + "/"))
             for name in ("generator", "discriminator")}
    for key, (path, gradient) in gradients.items():
        name = key.split("/")[0]
        slot = f"{name}_optimizer/{path.replace('/', '_')}"
        m, v = actual[slot + "_momentum"].astype(np.float64), actual[slot + "_velocity"].astype(np.float64)
        np.testing.assert_allclose(m, gradient, rtol=1e-3, atol=1e-5 * scale[name], err_msg=key)
        np.testing.assert_allclose(v, (1 - 0.99) * m**2, rtol=1e-5, err_msg=key)
        alpha = LR * np.sqrt(1 - 0.99) / (1 - 0.0)  # Adam's first step, epsilon 1e-7 outside the root
        np.testing.assert_allclose(actual[key], initial[key] - alpha * m / (np.sqrt(v) + 1e-7), rtol=1e-6,
                                   atol=1e-9, err_msg=key)
        checked |= {key, slot + "_momentum", slot + "_velocity"}
    for key, value in statistics.items():
        np.testing.assert_allclose(actual[key], value, rtol=1e-5, atol=1e-8, err_msg=key)
        assert not np.array_equal(value, initial[key]), key
        checked.add(key)
    for key in initial:
        if key.startswith("ema_generator/"):
            source = actual["generator/" + key.split("/", 1)[1]].astype(np.float64)
            expected = initial[key] - (1 - DECAY) * (initial[key] - source)
            np.testing.assert_allclose(actual[key], expected, rtol=1e-6, atol=1e-9, err_msg=key)
            checked.add(key)
    for name in ("generator", "discriminator"):
        assert actual[f"{name}_optimizer/iteration"] == 1
        assert actual[f"{name}_optimizer/learning_rate"] == np.float32(LR)
        checked |= {f"{name}_optimizer/iteration", f"{name}_optimizer/learning_rate"}
    assert checked == set(actual)
    moved = sum(not np.array_equal(actual[key], initial[key]) for key in gradients)
    assert moved > 0.9 * len(gradients)  # the comparison is not vacuous


@pytest.mark.slow
@pytest.mark.parametrize("replicas", [1, 2])
def test_trainer_step_equals_the_reference(reference, tmp_path, replicas, two_replicas):
    strategy = tf.distribute.get_strategy() if replicas == 1 else two_replicas
    keras.utils.set_random_seed(7)
    task = make_task(bn_group_size=2 if replicas == 1 else None)  # 2 replicas: 2 samples each, no groups
    trainer = Trainer(task=task, model_dir=str(tmp_path), strategy=strategy, train_steps=1, global_batch_size=BATCH,
                      steps_per_loop=1, checkpoint_every=1, sample_every=0, seed=SEED, dataset_fn=fixed_reals)
    trainer.train()
    compare(snapshot(task), reference)
    if replicas > 1:  # every replica holds the same statistics and EMA generator: the replica mean
        for v in task.generator.non_trainable_variables + task.ema_generator.variables:
            copies = [c.numpy() for c in v.value.values]
            assert all(np.array_equal(copies[0], c) for c in copies[1:]), v.path


def written_variables(step_fn):
    """How many values the XLA computation of step_fn writes back: its metrics and every variable it updates
    (the outputs of the HLO entry computation's root tuple)."""
    hlo = step_fn.experimental_get_compiler_ir()(stage="hlo")
    root = next(line for line in hlo[hlo.index("\nENTRY"):].splitlines() if line.lstrip().startswith("ROOT"))
    return len(re.findall(r"\b[a-z]+\d*\[[^\]]*\]", root.split(" = (", 1)[1].split(") tuple(", 1)[0]))


@pytest.mark.slow
def test_the_whole_replica_step_compiles_to_one_xla_computation_with_the_ema(reference):
    """On a TPU the replica step is one XLA program: the EMA update is in it (its HLO writes every EMA variable,
    which no host code then has to move), and the EMA generator comes out right."""
    keras.utils.set_random_seed(7)
    task = make_task(bn_group_size=2)
    task.build(tf.distribute.get_strategy(), BATCH, SEED, jit_compile=True)

    def compiled_step():
        return tf.function(lambda: task.train_step({"image": REALS}, tf.constant(0, tf.int64), tf.constant(0)),
                           jit_compile=True)

    step = compiled_step()
    with_ema = written_variables(step)
    update_ema, task._update_ema = task._update_ema, lambda step: None
    assert with_ema - written_variables(compiled_step()) == len(task.ema_generator.variables) > 0
    task._update_ema = update_ema
    step()
    compare(snapshot(task), reference)


def test_one_eager_step_of_a_tiny_task_moves_both_models():
    """The fast tier's GAN step: GANTask.train_step once, eagerly, on the ConvNet demo generator (building a HiT
    one takes seconds more) and the tiny D, with R1: finite metrics, G and D both updated."""
    task = GANTask(generator_preset="convnet_demo_32", discriminator_preset="stylegan_d_tiny_32")
    task.build(tf.distribute.get_strategy(), 2, jit_compile=False)
    models = (task.generator, task.discriminator)
    before = [[v.numpy() for v in model.trainable_variables] for model in models]
    metrics = task.train_step({"image": REALS[:2]}, tf.constant(0, tf.int64), 0)
    assert np.isfinite([float(value) for value in metrics.values()]).all(), metrics
    for model, values in zip(models, before):
        assert any(not np.array_equal(a, v.numpy()) for a, v in zip(values, model.trainable_variables)), model.name
