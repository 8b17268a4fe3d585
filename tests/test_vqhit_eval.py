"""Reconstruction evaluation of autoencoders (VQ-HiT): rFID, PSNR and SSIM in the Evaluator."""

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from hit.data.pipeline import DataSource
from hit.eval.classifier_distance import DemoClassifier
from hit.eval.evaluator import Evaluator
from hit.eval.reconstruction import PSNR_CAP_DB, is_autoencoder
from hit.tasks.vqhit import VQHiTTask
from hit.train.trainer import Trainer


class MeanColourExtractor:
    """A deterministic stand-in feature extractor: per-channel means and variances, 4 'classes'."""

    def features_and_logits(self, images):
        mean, var = tf.nn.moments(tf.convert_to_tensor(images), axes=[1, 2])
        return tf.concat([mean, var], 1), tf.concat([mean, -mean, var, -var], 1) * 5.0


class StandIn(tf.Module):
    """An 'autoencoder' whose reconstruction is x + amplitude * (32 / batch) * sin(7x): the identity when the
    amplitude is 0, and a perturbation that is larger in a smaller (the last) batch otherwise."""

    def __init__(self, amplitude=0.0):
        super().__init__()
        self.amplitude = tf.Variable(amplitude)

    def encode(self, images):
        return images

    def decode(self, codes):
        return codes

    def __call__(self, images, training=False):
        return images + self.amplitude * (32.0 / len(images)) * tf.sin(7.0 * images)


def make_evaluator(model_dir, num_samples, **kwargs):
    evaluator = Evaluator(model_dir=str(model_dir), protocol="demo_classifier", num_samples=num_samples,
                          batch_size=32, inception_split=32, kid_samples=num_samples, **kwargs)
    evaluator._extractor = MeanColourExtractor()
    return evaluator


def save_stand_ins(model_dir, amplitudes):
    """ckpt-1, ckpt-2, ... holding a StandIn's amplitude each, under the name "model"."""
    model = StandIn()
    checkpoint = tf.train.Checkpoint(model=model)
    for amplitude in amplitudes:
        model.amplitude.assign(amplitude)
        checkpoint.save(str(model_dir / "ckpt"))


def strict_json(text):
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))


def test_autoencoders_are_recognised_by_encode_and_decode():
    assert is_autoencoder(StandIn())
    assert not is_autoencoder(tf.Module()) and not is_autoencoder(lambda z, training=False: z)


def test_identity_reconstruction_gives_zero_rfid_capped_psnr_and_ssim_one(tmp_path):
    save_stand_ins(tmp_path, [0.0])
    evaluator = make_evaluator(tmp_path, 64)
    model = StandIn(0.5)  # restored to the identity
    metrics = evaluator.evaluate_checkpoint(str(tmp_path / "ckpt-1"), model, DataSource(name="random"), "model")
    assert model.amplitude.numpy() == 0.0
    assert abs(metrics["fid"]) < 1e-6 and abs(metrics["kid"]) < 1e-4  # unbiased KID is only ~0
    assert metrics["psnr"] == PSNR_CAP_DB  # tf.image.psnr is inf here
    assert metrics["ssim"] == pytest.approx(1.0, abs=1e-6)
    with open(evaluator.results_path) as f:
        rows = [strict_json(line) for line in f]
    assert len(rows) == 1 and rows[0]["psnr"] == PSNR_CAP_DB and rows[0]["checkpoint"] == "ckpt-1"
    with open(tmp_path / "best" / "best.json") as f:
        assert strict_json(f.read())["psnr"] == PSNR_CAP_DB


def test_psnr_and_ssim_are_averaged_over_every_image_including_a_partial_batch(tmp_path):
    save_stand_ins(tmp_path, [0.05])
    evaluator = make_evaluator(tmp_path, 70)  # batches of 32, 32 and 6
    data = DataSource(name="random")
    metrics = evaluator.evaluate_checkpoint(str(tmp_path / "ckpt-1"), StandIn(), data, "model")
    model, psnr, ssim, batch_means = StandIn(0.05), [], [], []
    for batch in data.eval_dataset(32, 70):
        x = batch["image"]
        y = tf.clip_by_value(model(x), -1.0, 1.0)
        psnr.append(tf.image.psnr(x, y, max_val=2.0))  # max_val 2: the range of [-1, 1]
        ssim.append(tf.image.ssim((x + 1) / 2, (y + 1) / 2, max_val=1.0))  # SSIM's usual [0, 1] convention
        batch_means.append(float(tf.reduce_mean(psnr[-1])))
    psnr, ssim = tf.concat(psnr, 0).numpy(), tf.concat(ssim, 0).numpy()
    assert len(psnr) == 70 and np.all(np.isfinite(psnr))
    assert metrics["psnr"] == pytest.approx(psnr.mean(), rel=1e-5)
    assert metrics["ssim"] == pytest.approx(ssim.mean(), rel=1e-5)
    assert abs(np.mean(batch_means) - psnr.mean()) > 0.5  # a mean of batch means would fail the check above
    assert metrics["fid"] > 1e-4 and metrics["psnr"] < 60.0 and metrics["ssim"] < 0.999


def test_best_metric_psnr_or_ssim_keeps_the_highest_and_needs_an_autoencoder(tmp_path):
    save_stand_ins(tmp_path, [0.1, 0.02, 0.2])
    evaluator = make_evaluator(tmp_path, 32, best_metric="ssim")
    model, data = StandIn(), DataSource(name="random")
    ssim = [evaluator.evaluate_checkpoint(str(tmp_path / f"ckpt-{i}"), model, data, "model")["ssim"] for i in (1, 2, 3)]
    assert ssim[1] > ssim[0] > ssim[2]
    with open(tmp_path / "best" / "best.json") as f:
        best = strict_json(f.read())
    assert best["checkpoint"] == "ckpt-2" and best["metric"] == "ssim" and best["value"] == ssim[1]
    with pytest.raises(ValueError, match="best_metric 'psnr' is for autoencoders") as info:
        make_evaluator(tmp_path, 32, best_metric="psnr").evaluate_checkpoint(
            str(tmp_path / "ckpt-1"), tf.Module(), data, "model")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="unknown best_metric"):
        make_evaluator(tmp_path, 32, best_metric="lpips")


@pytest.mark.slow
def test_evaluate_checkpoint_of_a_vqhit_run_restores_the_model_and_reports_rfid_psnr_ssim(tmp_path):
    task = VQHiTTask(model_preset="vqhit_tiny_32", discriminator_preset="stylegan_d_tiny_32", perceptual_weight=0.0)
    Trainer(task=task, model_dir=str(tmp_path), train_steps=2, global_batch_size=4, steps_per_loop=1,
            checkpoint_every=2, sample_every=0, jit_compile=False).train()
    weights = str(tmp_path / "classifier.weights.h5")
    DemoClassifier(channels=3).save(weights)  # random weights: the real demo_classifier protocol, offline
    evaluator = Evaluator(model_dir=str(tmp_path), protocol="demo_classifier", weights_path=weights,
                          num_samples=40, batch_size=32, inception_split=20, kid_samples=40)
    name, model = task.eval_generator()
    assert name == "model" and is_autoencoder(model)
    model.build_symbolic()
    assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(model.variables, task.model.variables))
    data = DataSource(name="random")
    metrics = evaluator.evaluate_checkpoint(str(tmp_path / "ckpt-2"), model, data, name)
    for a, b in zip(model.variables, task.model.variables, strict=True):  # the trained weights were restored
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    x = next(iter(data.eval_dataset(40, 40)))["image"]
    y = tf.clip_by_value(task.model(x, training=False), -1.0, 1.0)
    assert metrics["psnr"] == pytest.approx(float(tf.reduce_mean(tf.image.psnr(x, y, 2.0))), rel=1e-4)
    with open(evaluator.results_path) as f:
        (row,) = [strict_json(line) for line in f]
    assert row["step"] == 2 and row["protocol"] == "demo_classifier"
    assert all(math.isfinite(row[k]) for k in ("fid", "psnr", "ssim", "kid", "inception_score"))
    tags = set()
    for path in tf.io.gfile.glob(str(tmp_path / "eval" / "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    assert {"eval/fid", "eval/psnr", "eval/ssim", "eval/input_reconstruction"} <= tags
