"""Inception protocols offline (random weights through a temporary path) and the evaluation job."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from hit.data.pipeline import DataSource
from hit.eval.evaluator import Evaluator
from hit.eval.inception import KerasInception, SavedModelInception, make_feature_extractor
from hit.tasks.gan import GANTask
from hit.train.trainer import Trainer


@pytest.fixture(scope="module")
def random_inception():
    """A randomly initialised Keras InceptionV3 (real weights are the user's file)."""
    keras.utils.set_random_seed(0)
    base = keras.applications.InceptionV3(include_top=True, weights=None, classifier_activation=None)
    return base, keras.Model(base.input, [base.get_layer("avg_pool").output, base.output])


@pytest.mark.slow
def test_keras_inception_protocol_from_a_weights_file(tmp_path, random_inception):
    base, reference = random_inception
    path = str(tmp_path / "inception_v3.weights.h5")
    base.save_weights(path)
    extractor = make_feature_extractor("keras_inception", path)
    images = tf.random.uniform([2, 32, 32, 3], -1.0, 1.0)
    features, logits = extractor.features_and_logits(images)
    assert features.shape == (2, 2048) and logits.shape == (2, 1000)
    expected = reference(tf.image.resize(images, [299, 299], "bilinear"), training=False)
    np.testing.assert_allclose(features.numpy(), expected[0].numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits.numpy(), expected[1].numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_tfgan_style_inception_protocol_from_a_saved_model(tmp_path, random_inception):
    _, reference = random_inception

    class PoolAndLogits(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = reference

        @tf.function(input_signature=[tf.TensorSpec([None, 299, 299, 3], tf.float32, name="images")])
        def serve(self, images):
            pool, logits = self.model(images, training=False)
            return {"pool_3": pool[:, None, None, :], "logits": logits}  # pool_3 is [B, 1, 1, 2048]

    module = PoolAndLogits()
    tf.saved_model.save(module, str(tmp_path / "inception"), signatures={"serving_default": module.serve})
    extractor = SavedModelInception(str(tmp_path / "inception"))
    images = tf.random.uniform([2, 64, 64, 3], -1.0, 1.0)
    features, logits = extractor.features_and_logits(images)
    assert features.shape == (2, 2048) and logits.shape == (2, 1000)
    expected = reference(tf.image.resize(images, [299, 299], "bilinear"), training=False)
    np.testing.assert_allclose(features.numpy(), expected[0].numpy(), rtol=1e-4, atol=1e-4)


def test_missing_weights_are_one_line_errors(tmp_path):
    for protocol, pattern in [("keras_inception", "InceptionV3 weights not found"),
                              ("tfgan_inception", "Inception SavedModel not found"),
                              ("sift", "unknown evaluation protocol")]:
        with pytest.raises(ValueError, match=pattern) as info:
            make_feature_extractor(protocol, str(tmp_path / "absent"))
        assert "\n" not in str(info.value)
    assert KerasInception and SavedModelInception  # both protocols are importable without weights


class MeanColourExtractor:
    """A deterministic stand-in feature extractor: per-channel means and variances, 4 'classes'."""

    def features_and_logits(self, images):
        images = tf.convert_to_tensor(images)
        mean, var = tf.nn.moments(images, axes=[1, 2])
        return tf.concat([mean, var], 1), tf.concat([mean, -mean, var, -var], 1)[:, :4] * 5.0


def tiny_run(model_dir, steps):
    task = GANTask(generator_preset="hit_tiny_32", discriminator_preset="stylegan_d_tiny_32")
    trainer = Trainer(task=task, model_dir=str(model_dir), train_steps=steps, global_batch_size=4, steps_per_loop=1,
                      checkpoint_every=1, sample_every=0, jit_compile=False)
    trainer.train()
    return task


@pytest.mark.slow
def test_evaluator_reports_caches_reference_and_keeps_the_best(tmp_path):
    task = tiny_run(tmp_path, steps=2)
    evaluator = Evaluator(model_dir=str(tmp_path), protocol="demo_classifier", num_samples=40, batch_size=16,
                          inception_split=20, kid_samples=40)
    evaluator._extractor = MeanColourExtractor()
    data = DataSource(name="random", resolution=32)
    name, generator = task.eval_generator()
    first = evaluator.evaluate_checkpoint(str(tmp_path / "ckpt-1"), generator, data, name)
    assert set(first) >= {"fid", "inception_score", "kid", "eval_time"} and np.isfinite(first["fid"])
    assert os.path.exists(evaluator.reference_path)  # computed once, cached
    with open(tmp_path / "best" / "best.json") as f:
        assert json.load(f)["checkpoint"] == "ckpt-1"
    # The EMA generator is what was restored: its weights equal the checkpoint's EMA weights.
    np.testing.assert_array_equal(generator.variables[0].numpy(),
                                  tf.train.load_checkpoint(str(tmp_path / "ckpt-1")).get_tensor(
                                      "ema_generator/" + generator.variables[0].path.split("/", 1)[1].replace(
                                          "/", ".S") + "/.ATTRIBUTES/VARIABLE_VALUE"))
    second = evaluator.evaluate_checkpoint(str(tmp_path / "ckpt-2"), generator, data, name)
    with open(tmp_path / "best" / "best.json") as f:
        best = json.load(f)
    expected = "ckpt-2" if second["fid"] < first["fid"] else "ckpt-1"
    assert best["checkpoint"] == expected and best["metric"] == "fid"
    assert sorted(os.listdir(tmp_path / "best")) == sorted(["best.json", f"{expected}.index",
                                                             f"{expected}.data-00000-of-00001"])
    tags = set()
    for path in tf.io.gfile.glob(str(tmp_path / "eval" / "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    assert {"eval/fid", "eval/inception_score", "eval/kid", "eval/real_fake"} <= tags


@pytest.mark.slow
def test_the_eval_job_skips_deleted_and_damaged_checkpoints_and_still_stops(tmp_path, caplog):
    """A checkpoint the trainer's keep_checkpoints removed (still listed in the `checkpoint` state file) is not
    evaluated; a damaged one (a truncated .data file) is recorded as skipped, not retried by a later run of the
    job, and the checkpoints after it are evaluated. Before, the damaged one stopped every run of the job."""
    task = tiny_run(tmp_path, steps=3)
    for path in tf.io.gfile.glob(str(tmp_path / "ckpt-1.*")):
        tf.io.gfile.remove(path)
    data_file = tmp_path / "ckpt-2.data-00000-of-00001"
    data_file.write_bytes(data_file.read_bytes()[:1000])
    evaluator = Evaluator(model_dir=str(tmp_path), protocol="demo_classifier", num_samples=16, batch_size=16,
                          inception_split=16, kid_samples=16)
    evaluator._extractor = MeanColourExtractor()
    name, generator = task.eval_generator()
    for _ in range(2):
        evaluator.run(generator, DataSource(name="random", resolution=32), train_steps=10, timeout=1, name=name,
                      poll_seconds=0.1)
    rows = evaluator.results()
    assert [r["step"] for r in rows] == [2, 3] and "fid" in rows[1]
    assert rows[0]["skipped"].startswith(f"checkpoint {tmp_path / 'ckpt-2'} is damaged: {data_file} is damaged (")
    assert sum("Skipping" in r.getMessage() for r in caplog.records) == 1  # the second run did not retry it
