"""Sampling a trained run (hit.inference.sampling, tools/sample.py): restoring the generator a run trained, samples,
latent interpolations, PNG folders, progress per batch, the tool's modes, its default outputs under the run
directory, and its one-line errors."""

import os
import shutil
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from hit.core.seeds import seed_latents, seed_range
from hit.eval.evaluator import Evaluator
from hit.inference import runs, sampling
from hit.models.presets import get_generator
from hit.tasks.gan import GANTask
from hit.train.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What `python -m hit.main` would parse; the overrides make a generator whose variables differ from the
# preset's own (LayerNorm: no moving statistics), so reading them from config.gin is checked too.
RUN_GIN = """
hit.tasks.GANTask.generator_preset = 'hit_tiny_32'
hit.tasks.GANTask.discriminator_preset = 'stylegan_d_tiny_32'
hit.tasks.GANTask.generator_overrides = {'norm_type': 'layer'}
hit.tasks.GANTask.ema_start_step = 1
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(model_dir, task) of a real two-step run: ckpt-2 and config.gin, EMA and raw generators apart."""
    model_dir = str(tmp_path_factory.mktemp("run"))
    gin.clear_config()
    gin.parse_config(RUN_GIN)
    task = GANTask()
    Trainer(task=task, model_dir=model_dir, train_steps=2, global_batch_size=4, steps_per_loop=2,
            checkpoint_every=2, sample_every=0, jit_compile=False).train()
    gin.clear_config()
    return model_dir, task


def run_tool(*args, cwd=ROOT):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "sample.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def read_png(path):
    return tf.io.decode_png(tf.io.read_file(str(path))).numpy()


def assert_same_variables(model, reference):
    assert len(model.variables) == len(reference.variables)
    for v, ref in zip(model.variables, reference.variables):
        np.testing.assert_array_equal(v.numpy(), ref.numpy(), err_msg=v.path)


@pytest.mark.slow
def test_load_generator_restores_the_ema_and_the_raw_generator(run):
    model_dir, task = run
    assert not np.array_equal(task.ema_generator.variables[0].numpy(), task.generator.variables[0].numpy())
    ema = runs.load_generator(model_dir)
    assert ema.get_config()["norm_type"] == "layer"  # the run's overrides, from config.gin
    assert_same_variables(ema, task.ema_generator)
    raw = runs.load_generator(checkpoint=os.path.join(model_dir, "ckpt-2"), which="generator")
    assert_same_variables(raw, task.generator)
    assert gin.config_str() == ""  # the run's config is not left bound


@pytest.mark.slow
def test_load_generator_errors_are_one_line(run, tmp_path):
    model_dir, _ = run
    cases = {
        "no checkpoint found in": dict(model_dir=str(tmp_path)),
        "no checkpoint at": dict(checkpoint=os.path.join(model_dir, "ckpt-7")),
        "which must be one of": dict(model_dir=model_dir, which="discriminator"),
        "give a model_dir or checkpoint": dict(),
    }
    # A checkpoint whose config.gin is missing, then one naming another generator (BatchNorm): not restored.
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    os.remove(copy / "config.gin")
    cases["no config.gin in"] = dict(model_dir=str(copy))
    mismatched = tmp_path / "mismatched"
    shutil.copytree(model_dir, mismatched)
    (mismatched / "config.gin").write_text("GANTask.generator_preset = 'hit_tiny_32'\n")
    cases["ema_generator variables but the run's generator has"] = dict(model_dir=str(mismatched))
    for message, kwargs in cases.items():
        with pytest.raises(ValueError, match=message) as error:
            runs.load_generator(**kwargs)
        assert "\n" not in str(error.value)


@pytest.mark.slow
def test_samples_are_clipped_g_of_z_deterministic_per_seed_and_batched(monkeypatch):
    generator = get_generator("hit_tiny_32")
    images = sampling.sample(generator, 5, seed=3).numpy()
    z = seed_latents(seed_range(3, 5), generator.latent_dim)
    np.testing.assert_array_equal(images, tf.clip_by_value(generator(z, training=False), -1.0, 1.0).numpy())
    assert images.shape == (5, 32, 32, 3) and images.min() >= -1.0 and images.max() <= 1.0
    np.testing.assert_array_equal(images, sampling.sample(generator, 5, seed=3).numpy())
    assert not np.allclose(images, sampling.sample(generator, 5, seed=4).numpy())
    monkeypatch.setattr(sampling, "BATCH_SIZE", 2)
    batches = list(sampling.sample_batches(generator, 5, seed=3))
    assert [len(b) for b in batches] == [2, 2, 1]
    np.testing.assert_allclose(np.concatenate(batches), images, atol=1e-5)


@pytest.mark.slow
def test_a_seed_gives_the_same_sample_in_every_batch_and_in_training_grids_and_the_evaluator(tmp_path):
    generator = get_generator("hit_tiny_32")
    images = sampling.sample(generator, 5, seed=0).numpy()
    np.testing.assert_allclose(sampling.sample(generator, 2, seed=3).numpy(), images[3:], atol=1e-5)
    task = GANTask.__new__(GANTask)  # only its sample grid, with this generator as the EMA generator
    task.ema_generator = generator
    np.testing.assert_allclose(task.sample_images(5).numpy(), images, atol=1e-5)
    evaluator = Evaluator(model_dir=str(tmp_path), num_samples=5, batch_size=2)
    np.testing.assert_allclose(np.concatenate(list(evaluator._fake_batches(generator))), images, atol=1e-5)


@pytest.mark.slow
def test_interpolation_strips_run_between_samples_of_the_seed():
    generator = get_generator("hit_tiny_32")
    ends = sampling.sample(generator, 6, seed=1).numpy()  # 3 strips: from ends[i] to ends[3 + i]
    for mode in ("slerp", "lerp"):
        strips = sampling.interpolate(generator, 3, 4, seed=1, mode=mode).numpy()
        assert strips.shape == (3, 4, 32, 32, 3) and strips.min() >= -1.0 and strips.max() <= 1.0
        np.testing.assert_allclose(strips[:, 0], ends[:3], atol=1e-4)
        np.testing.assert_allclose(strips[:, -1], ends[3:], atol=1e-4)
    z = {mode: sampling.interpolation_latents(32, 3, 5, seed=1, mode=mode).numpy() for mode in ("slerp", "lerp")}
    ends = seed_latents(seed_range(1, 6), 32).numpy()
    for value in z.values():
        np.testing.assert_allclose(value[:, 0], ends[:3], atol=1e-6)
        np.testing.assert_allclose(value[:, -1], ends[3:], atol=1e-6)
    np.testing.assert_allclose(z["lerp"][:, 2], (ends[:3] + ends[3:]) / 2, atol=1e-6)
    norms = {mode: np.linalg.norm(value, axis=-1) for mode, value in z.items()}
    assert np.all(norms["slerp"][:, 2] > norms["lerp"][:, 2])  # the straight line's middle is shorter
    with pytest.raises(ValueError, match="mode must be one of"):
        sampling.interpolation_latents(32, 3, 5, mode="cubic")


class Counts:
    """Stands in for hit.core.progress.Progress: records each update."""

    def __init__(self):
        self.counts = []

    def update(self, count):
        self.counts.append(count)


@pytest.mark.slow
def test_progress_is_told_each_batch(monkeypatch):
    monkeypatch.setattr(sampling, "BATCH_SIZE", 2)
    generator = get_generator("hit_tiny_32")
    progress = Counts()
    for _ in sampling.sample_batches(generator, 5, progress=progress):
        pass
    assert progress.counts == [2, 2, 1]
    progress = Counts()
    assert sampling.sample(generator, 3, progress=progress).shape[0] == 3 and progress.counts == [2, 1]
    progress = Counts()
    sampling.interpolate(generator, 1, 3, progress=progress)
    assert progress.counts == [2, 1]


def test_write_individual_pngs_numbers_from_start_index(tmp_path):
    images = tf.constant([[[[-1.0]]], [[[1.0]]]])
    paths = sampling.write_individual_pngs(images, str(tmp_path / "new"), start_index=7)
    assert [os.path.basename(p) for p in paths] == ["000007.png", "000008.png"]
    assert read_png(paths[0]).tolist() == [[[0]]] and read_png(paths[1]).tolist() == [[[255]]]


@pytest.mark.slow
def test_tool_grid_folder_and_interpolation_from_a_run(run, tmp_path):
    model_dir, _ = run
    result = run_tool(f"--model_dir={model_dir}", "--num_samples=6", "--seed=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    grid = os.path.join(model_dir, "samples", "grid.png")  # the default output: in the run
    assert result.stdout.strip() == grid
    assert read_png(grid).shape == (2 * 32, 3 * 32, 3)
    assert "sampling: 6 images in" in result.stderr  # hit.core.progress's last line

    result = run_tool(f"--checkpoint={model_dir}/ckpt-2", "--which=generator", "--mode=folder", "--num_samples=5",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = os.path.join(model_dir, "samples", "folder")  # the default: in the checkpoint's run
    assert result.stdout.strip() == folder
    assert sorted(os.listdir(folder)) == [f"{i:06d}.png" for i in range(5)]
    assert read_png(os.path.join(folder, "000004.png")).shape == (32, 32, 3)
    assert "sampling: 5 images in" in result.stderr
    assert os.listdir(tmp_path) == []  # nothing written to the current directory

    result = run_tool(f"--model_dir={model_dir}", "--mode=interpolation", "--num_strips=1", "--steps=2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == os.path.join(model_dir, "samples", "interpolation.png")

    strips = tmp_path / "strips.png"
    result = run_tool(f"--model_dir={model_dir}", "--mode=interpolation", f"--output={strips}",
                      "--num_strips=2", "--steps=5", "--interpolation=lerp")
    assert result.returncode == 0, result.stderr
    assert read_png(strips).shape == (2 * 32, 5 * 32, 3)


@pytest.mark.slow
def test_tool_smoke_mode_samples_a_fresh_preset(tmp_path):
    result = run_tool("--preset=hit_tiny_32", "--num_samples=6", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    output = os.path.join("runs", "fresh_hit_tiny_32", "samples", "grid.png")  # the default: under runs/
    assert result.stdout.strip() == output
    grid = read_png(tmp_path / output)
    assert grid.shape == (2 * 32, 3 * 32, 3) and grid.dtype == np.uint8


@pytest.mark.slow
def test_a_write_error_is_one_line(run, tmp_path):
    # Before, a full disk or an unwritable folder printed a traceback.
    (tmp_path / "file").write_text("a file, not a folder")
    result = run_tool(f"--model_dir={run[0]}", f"--output={tmp_path / 'file' / 'grid.png'}", "--num_samples=2")
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: cannot write {tmp_path / 'file' / 'grid.png'}: "), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--model_dir={empty}"], "error: no checkpoint found in"),
    (["--model_dir={run}", "--which=discriminator"], "error: which must be one of ema_generator, generator"),
])
def test_tool_errors_are_one_line(run, tmp_path, args, message):
    args = [arg.format(empty=tmp_path, run=run[0]) for arg in args]
    result = run_tool(*args, f"--output={tmp_path / 'x.png'}")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr
    assert result.stdout == "" and not (tmp_path / "x.png").exists()
