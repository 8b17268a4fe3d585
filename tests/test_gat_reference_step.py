"""One whole GAT step against the official step written out (tests/gat_reference.py), on the same random draws
(GATTask.step_draws / train_step(draws=...)): the D step's losses and gradients, its AdamW update, then with the
updated D the G step's loss and gradients, its AdamW update, the EMA and w_avg. gat_tiny, float32, REPA on."""

import numpy as np
import pytest
import tensorflow as tf

from hit.models.presets import get_discriminator, get_generator
from hit.tasks.gat import DRAWS, GATTask
from tests import gat_reference as ref

BATCH, RESOLUTION, CLASSES, GRID, DINO = 4, 16, 10, 8, 16

# The module fixture builds a task and takes a whole step (6 s on 2 cores): the whole suite runs it.
pytestmark = pytest.mark.slow


def as_numpy(tree):
    return tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, tree)


def dense(gradient):
    return tf.convert_to_tensor(gradient).numpy()  # embedding tables' gradients come as IndexedSlices


def values(model):
    return [v.numpy() for v in model.trainable_variables]


def assign(model, arrays):
    for variable, value in zip(model.trainable_variables, arrays):
        variable.assign(value)


def assert_gradients_close(got, expected, name):
    """Each tensor to 1e-4 of the largest gradient entry (float32 sums in another order)."""
    scale = max(np.abs(g).max() for g in expected)
    for i, (a, b) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * scale, err_msg=f"{name} gradient {i}")


def a_batch():
    rng = np.random.default_rng(5)
    normal = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    return {"latent": normal(BATCH, RESOLUTION, RESOLUTION, 4), "label": np.array([3, 7, 3, 1], np.int32),
            "dino_cls": normal(BATCH, DINO), "dino_cls_flip": normal(BATCH, DINO),
            "dino_patches": normal(BATCH, GRID * GRID, DINO), "dino_patches_flip": normal(BATCH, GRID * GRID, DINO)}


@pytest.fixture(scope="module")
def step():
    """The task's step and everything the reference needs, in one place."""
    task = GATTask(generator_preset="gat_tiny", precision="float32")
    task.build(tf.distribute.get_strategy(), BATCH, seed=11, jit_compile=False)
    batch = a_batch()
    draws = task.step_draws(tf.constant(0, tf.int64), tf.constant(0))
    real, labels = tf.constant(batch["latent"]), tf.constant(batch["label"])
    extras = {k: tf.constant(v) for k, v in batch.items() if k.startswith("dino_")}
    d_draws = {k: v for k, v in draws.items() if k == "z" or k.startswith(("d_", "r1_", "r2_"))}
    g_draws = {k: v for k, v in draws.items() if k == "z" or k.startswith("g_")}
    before = dict(g=values(task.generator), d=values(task.discriminator), ema=values(task.ema_generator),
                  w_avg=task.generator.w_avg.numpy())
    d_grads, _ = task._discriminator_gradients(extras, real, labels, d_draws)
    metrics = task.train_step({k: tf.constant(v) for k, v in batch.items()}, tf.constant(0, tf.int64),
                              tf.constant(0), draws=draws)
    after = dict(g=values(task.generator), d=values(task.discriminator), ema=values(task.ema_generator),
                 w_avg=task.generator.w_avg.numpy(), ema_w_avg=task.ema_generator.w_avg.numpy())
    # G's gradient at its weights before the step, against the updated D (as train_step took it).
    assign(task.generator, before["g"])
    g_grads, _, _ = task._generator_gradients(real, labels, g_draws)
    assign(task.generator, after["g"])
    return dict(task=task, batch=batch, draws=as_numpy(draws), before=before, after=after,
                d_grads=[dense(g) for g in d_grads], g_grads=[dense(g) for g in g_grads],
                metrics=as_numpy(metrics))


@pytest.fixture(scope="module")
def reference_models(step):
    """Fresh gat_tiny G and D holding the task's initial weights."""
    generator, discriminator = get_generator("gat_tiny"), get_discriminator("gat_tiny")
    assign(generator, step["before"]["g"])
    generator.w_avg.assign(step["before"]["w_avg"])
    assign(discriminator, step["before"]["d"])
    return generator, discriminator


def test_the_draws_are_the_documented_ones(step):
    draws = step["draws"]
    assert sorted(draws) == sorted(DRAWS)
    assert draws["z"].shape == (BATCH, step["task"].latent_dim)
    assert draws["d_fake_noise"].shape == draws["r2_noise"].shape == (4, BATCH, RESOLUTION, RESOLUTION, 4)
    assert set(draws["d_real_augment"]) == {"brightness", "saturation", "contrast", "color_mask", "translation",
                                            "cutout_center", "flip"}
    with pytest.raises(ValueError, match="draws lacks \\['r1_noise'\\]"):
        step["task"].train_step(step["batch"], tf.constant(0, tf.int64), tf.constant(0),
                                draws={k: v for k, v in draws.items() if k != "r1_noise"})


def test_discriminator_step_equals_the_official_step(step, reference_models):
    generator, discriminator = reference_models
    draws, batch = step["draws"], step["batch"]
    levels = np.stack([x.numpy() for x in generator.levels(draws["z"], batch["label"])])
    with tf.GradientTape() as tape:
        terms = ref.discriminator_loss(discriminator, batch["latent"], levels, batch["label"], draws, batch)
    grads = [dense(g) for g in tape.gradient(terms["d_total_loss"], discriminator.trainable_variables)]
    for name, value in terms.items():
        # aR1 / aR2 square logit differences of ~1e-4 divided by sigma: float32 logits near 1 carry 6e-8, so the
        # penalties agree to ~1e-3 of themselves (recomputed colour means would move them by tens of percent).
        rtol = 5e-3 if name.startswith("ar") else 2e-5
        np.testing.assert_allclose(step["metrics"][name], value.numpy(), rtol=rtol, err_msg=name)
    assert_gradients_close(step["d_grads"], grads, "D")
    # AdamW (official train.py: torch.optim.AdamW(0, 0.99, 1e-8), clip_grad_norm_(1.0)) on the task's gradients.
    lr = step["task"].discriminator_lr
    updated = ref.adamw_first_step(step["before"]["d"], ref.clip_grad_norm(step["d_grads"]), lr)
    for i, (got, expected) in enumerate(zip(step["after"]["d"], updated)):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-3 * lr, err_msg=f"D weight {i}")


def test_generator_step_ema_and_w_avg_equal_the_official_step(step, reference_models):
    generator, discriminator = reference_models
    assign(discriminator, step["after"]["d"])  # G trains against the updated D
    draws, batch = step["draws"], step["batch"]
    with tf.GradientTape() as tape:
        loss, w = ref.generator_loss(generator, discriminator, batch["latent"], batch["label"], draws)
    grads = [dense(g) for g in tape.gradient(loss, generator.trainable_variables)]
    np.testing.assert_allclose(step["metrics"]["g_loss"], loss.numpy(), rtol=2e-5)
    assert_gradients_close(step["g_grads"], grads, "G")
    lr = step["task"].generator_lr
    updated = ref.adamw_first_step(step["before"]["g"], ref.clip_grad_norm(step["g_grads"]), lr)
    for i, (got, expected) in enumerate(zip(step["after"]["g"], updated)):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-3 * lr, err_msg=f"G weight {i}")
    # The EMA started as a copy of G (update_ema(ema, generator, decay=0)), then one update at 0.999.
    ema = ref.update_ema(step["before"]["g"], step["after"]["g"])
    for i, (got, expected) in enumerate(zip(step["after"]["ema"], ema)):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7, err_msg=f"EMA weight {i}")
    w_avg = ref.update_w_avg(step["before"]["w_avg"], w.numpy(), batch["label"])
    np.testing.assert_allclose(step["after"]["w_avg"], w_avg, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(step["after"]["ema_w_avg"], step["after"]["w_avg"])  # buffers copied
    assert not np.array_equal(w_avg, step["before"]["w_avg"])
