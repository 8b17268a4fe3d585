"""GAT runs after training: the generator restored from a run (class-conditional, decoded), truncation, evaluation
with every class in turn against an ADM-style reference batch with precision / recall and psi / decoder beside the
numbers, the SavedModel with a label input (and a VAE decoder inside), and tools/sample.py's labels and psi."""

import io
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from hit.core.images import to_uint8
from hit.core.seeds import seed_labels, seed_latents, seed_range
from hit.data.pipeline import DataSource
from hit.eval.evaluator import Evaluator
from hit.eval.fid import RunningStatistics, fid_from_statistics
from hit.inference import runs, sampling
from hit.inference.export import export_generator
from hit.models.presets import get_generator
from hit.models.samples import Decoded
from hit.models.sd_vae import SDVAE
from hit.tasks.gat import GATTask
from hit.train.checkpoints import make_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = """Trainer.task = @GATTask()
GATTask.generator_preset = 'gat_tiny'
GATTask.repa_weight = 0.0
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A GAT run directory: config.gin and ckpt-3 of a built (untrained) task, with distinct class means."""
    model_dir = tmp_path_factory.mktemp("gat_run")
    keras.utils.set_random_seed(0)
    task = GATTask(generator_preset="gat_tiny", repa_weight=0.0)
    task.build(tf.distribute.get_strategy(), 4)
    task.ema_generator.w_avg.assign(tf.random.normal(task.ema_generator.w_avg.shape))
    (model_dir / "config.gin").write_text(CONFIG)
    checkpoint = make_checkpoint(task.checkpoint_items())
    checkpoint.save_counter.assign(2)
    checkpoint.save(str(model_dir / "ckpt"))  # ckpt-3, listed in model_dir/checkpoint
    return model_dir, task


def test_the_run_loads_as_a_decoded_conditional_generator(run):
    model_dir, task = run
    generator = runs.load_generator(str(model_dir))
    assert isinstance(generator, Decoded) and generator.decoder == "identity"
    assert runs.run_kind(str(model_dir)) == "gat"
    for restored, saved in zip(generator.model.variables, task.ema_generator.variables):
        np.testing.assert_array_equal(restored.numpy(), saved.numpy())
    z = seed_latents(seed_range(0, 20), generator.latent_dim)
    images = sampling.sample(generator, 20)
    expected = task.ema_generator(z, seed_labels(seed_range(0, 20), 10))[..., :3]  # no VAE: the first 3 channels
    np.testing.assert_allclose(images, tf.clip_by_value(expected, -1, 1), atol=1e-6)
    # psi = 1: w is the class's mean, and G's tokens start from a constant, so a class gives one image.
    same = sampling.sample(generator, 3, label=4, truncation_psi=1.0)
    np.testing.assert_allclose(same[0], same[2], atol=1e-6)
    assert not np.allclose(same[0], sampling.sample(generator, 1, label=5, truncation_psi=1.0)[0], atol=1e-3)
    with pytest.raises(ValueError, match=r"class label 10 is outside \[0, 10\)"):
        sampling.check_label(generator, 10)


class LabelSpy:
    """A conditional stand-in generator recording the labels it is asked for: images encode their label."""

    latent_dim, num_classes = 4, 10

    def __init__(self):
        self.labels = []

    def __call__(self, z, labels, truncation_psi=0.0, training=False):
        self.labels.extend(np.asarray(labels).tolist())
        shade = tf.cast(labels, tf.float32)[:, None, None, None] / 10.0 - 0.5 + 0.01 * z[:, :1, None, None]
        return tf.tile(shade, [1, 8, 8, 3])


class MeanColourExtractor:
    def features_and_logits(self, images):
        mean, var = tf.nn.moments(tf.convert_to_tensor(images), axes=[1, 2])
        return tf.concat([mean, var], 1), tf.concat([mean, -mean], 1)[:, :4] * 5.0


def test_evaluation_balances_classes_and_uses_the_reference_batch(tmp_path):
    spy = LabelSpy()
    reference_images = (np.random.default_rng(0).random((30, 8, 8, 3)) * 255).astype(np.uint8)
    features = MeanColourExtractor().features_and_logits(tf.cast(reference_images, tf.float32) / 127.5 - 1)[0]
    stats = RunningStatistics(6)
    stats.update(features)
    buffer = io.BytesIO()
    np.savez(buffer, mu=stats.mean(), sigma=stats.covariance(), arr_0=reference_images)
    (tmp_path / "ref.npz").write_bytes(buffer.getvalue())
    evaluator = Evaluator(model_dir=str(tmp_path), protocol="demo_classifier", num_samples=40, batch_size=16,
                          inception_split=20, kid_samples=20, reference_batch=str(tmp_path / "ref.npz"),
                          precision_recall=True, truncation_psi=0.7)
    evaluator._extractor = MeanColourExtractor()
    metrics, _ = evaluator.evaluate(spy, DataSource("random", resolution=8))
    assert np.bincount(spy.labels).tolist() == [4] * 10  # 40 samples: every class in turn, across batches
    assert {"fid", "kid", "precision", "recall"} <= set(metrics)
    assert 0.0 <= metrics["precision"] <= 1.0 and 0.0 <= metrics["recall"] <= 1.0
    fid = metrics["fid"]
    fake = RunningStatistics(6)
    fake.update(MeanColourExtractor().features_and_logits(tf.concat(list(evaluator._fake_batches(LabelSpy())), 0))[0])
    assert fid == pytest.approx(fid_from_statistics(stats, fake), rel=1e-6)  # against the batch's mu and sigma
    with pytest.raises(ValueError, match="needs Evaluator.precision_recall = True"):
        Evaluator(model_dir=str(tmp_path), best_metric="recall")


def test_random_labels_and_uint8_quantisation_as_the_official_fid(tmp_path):
    """labels='random' draws each seed's class (official GAT FID-50K), the same for a seed in any batch; quantize
    rounds the samples to uint8 levels before the feature network."""
    spy = LabelSpy()
    evaluator = Evaluator(model_dir=str(tmp_path), protocol="demo_classifier", num_samples=200, batch_size=64,
                          labels="random", quantize=True)
    batches = [b.numpy() for b in evaluator._fake_batches(spy)]
    counts = np.bincount(spy.labels, minlength=10)
    assert counts.sum() == 200 and counts.min() >= 5 and counts.tolist() != [20] * 10  # random, not balanced
    np.testing.assert_array_equal(seed_labels(seed_range(64, 136), 10, "random"), spy.labels[64:])
    images = np.concatenate(batches)
    levels = (images + 1.0) * 127.5
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)  # on the uint8 grid
    raw = next(Evaluator(model_dir=str(tmp_path), labels="random")._fake_batches(LabelSpy())).numpy()
    assert not np.allclose((raw + 1.0) * 127.5, np.round((raw + 1.0) * 127.5), atol=1e-3)
    with pytest.raises(ValueError, match="Evaluator.labels must be one of balanced, random"):
        Evaluator(model_dir=str(tmp_path), labels="uniform")


def test_checkpoint_results_name_psi_labels_and_decoder(run, tmp_path):
    model_dir, task = run
    evaluator = Evaluator(model_dir=str(model_dir), protocol="demo_classifier", num_samples=20, batch_size=10,
                          inception_split=10, kid_samples=20, truncation_psi=0.3, quantize=True)
    evaluator._extractor = MeanColourExtractor()
    name, generator = task.eval_generator()
    bfloat16_run = GATTask(generator_preset="gat_tiny", repa_weight=0.0, precision="bfloat16")
    assert bfloat16_run.eval_generator()[1].model.compute_dtype == "float32"  # the EMA generator samples in float32
    evaluator.evaluate_checkpoint(str(model_dir / "ckpt-3"), generator, DataSource("random", resolution=16), name)
    row = evaluator.results()[-1]
    assert (row["step"], row["truncation_psi"], row["labels"], row["quantized"], row["decoder"]) == (
        3, 0.3, "balanced", True, "identity")


@pytest.mark.slow
def test_the_export_takes_labels_and_decodes_through_the_vae(run, tmp_path):
    _, task = run
    keras.utils.set_random_seed(1)
    vae = SDVAE(128, channels=8, channel_multipliers=(1, 1, 1, 1), num_res_blocks=1, groups=4).build_symbolic()
    generator = Decoded(task.ema_generator, lambda x: tf.clip_by_value(vae.decode(x), -1, 1), "tiny", vae)
    path = export_generator(generator, str(tmp_path), 7)
    loaded = tf.saved_model.load(path)
    z, labels = seed_latents(seed_range(0, 3), generator.latent_dim), tf.constant([0, 4, 9])
    out = loaded.signatures["serving_default"](z=z, label=labels)["images"]
    assert out.shape == (3, 128, 128, 3) and out.dtype == tf.uint8  # 16x16x4 latents -> 128 px images
    np.testing.assert_allclose(out.numpy().astype(int), to_uint8(generator(z, labels)).numpy().astype(int), atol=1)
    spec = loaded.signatures["generate"].structured_input_signature[1]
    assert set(spec) == {"seed", "label"}
    for bad in ([0, -1], [10, 1]):  # -1 would wrap to class 9, 10 give zeros on GPU
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"label must be a class in \[0, 10\)"):
            loaded.signatures["generate"](seed=tf.constant([1, 2], tf.int64), label=tf.constant(bad))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"label must have shape \[batch\]"):
        loaded.signatures["generate_float"](z=z[:1], label=tf.constant(3))  # rank 0
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"z must be finite \(no NaN or Inf\)"):
        loaded.signatures["generate_float"](z=z * np.nan, label=labels)


def run_tool(*args):
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_sample_tool_grids_classes_in_columns_and_checks_labels(run, tmp_path):
    model_dir, task = run
    result = run_tool("tools/sample.py", f"--model_dir={model_dir}", "--num_samples=20",
                      f"--output={tmp_path / 'grid.png'}")
    assert result.returncode == 0, result.stderr[-2000:]
    grid = tf.io.decode_png(tf.io.read_file(str(tmp_path / "grid.png"))).numpy()
    assert grid.shape == (32, 160, 3)  # 2 rows x 10 columns of 16 px: column k holds class k
    result = run_tool("tools/sample.py", f"--model_dir={model_dir}", "--label=10", f"--output={tmp_path / 'x.png'}")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == "error: class label 10 is outside [0, 10)"
    with pytest.raises(ValueError, match="unconditional"):
        sampling.check_label(get_generator("hit_tiny_32"), 1)
