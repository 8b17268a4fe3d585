"""VQ-HiT SavedModel export (hit.inference.export.export_autoencoder, tools/export.py on a VQHiTTask run): encode,
decode and reconstruct equal the in-memory autoencoder at any batch size, bad inputs fail inside the graph with the
promised messages, saved_model_cli (TF Serving's TF1-style loader) lists and runs them; load_autoencoder /
run_kind."""

import collections
import os
import shutil
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from hit.core.images import to_uint8
from hit.inference import runs
from hit.inference.export import AutoencoderSignatures, export_autoencoder
from hit.tasks.vqhit import VQHiTTask
from hit.train.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
CLI = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
RUN_GIN = """
hit.tasks.VQHiTTask.model_preset = 'vqhit_tiny_32'
hit.tasks.VQHiTTask.discriminator_preset = 'stylegan_d_tiny_32'
hit.tasks.VQHiTTask.perceptual_weight = 0.0
"""
Exported = collections.namedtuple("Exported", "loaded model task path")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny VQ-HiT trained for 2 steps, exported by tools/export.py with its defaults: the loaded SavedModel,
    the run's autoencoder from load_autoencoder, the trained task and the version directory."""
    run = str(tmp_path_factory.mktemp("vqhit") / "run")
    gin.clear_config()
    gin.parse_config(RUN_GIN)
    task = VQHiTTask()
    Trainer(task=task, model_dir=run, train_steps=2, global_batch_size=4, steps_per_loop=2, checkpoint_every=2,
            sample_every=0, jit_compile=False).train()
    gin.clear_config()
    result = subprocess.run([sys.executable, "tools/export.py", f"--model_dir={run}"], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    path = result.stdout.strip().splitlines()[-1]
    return Exported(tf.saved_model.load(path), runs.load_autoencoder(run), task, path)


def uint8_images(batch, seed=0):
    return tf.constant(np.random.default_rng(seed).integers(0, 256, (batch, 32, 32, 3)), tf.uint8)


@pytest.mark.slow
def test_load_autoencoder_restores_the_trained_model_and_run_kind_tells_the_tasks_apart(exported, tmp_path):
    run = os.path.dirname(os.path.dirname(exported.path))
    assert runs.run_kind(run) == "vqhit"
    assert len(exported.model.variables) == len(exported.task.model.variables)
    for v, ref in zip(exported.model.variables, exported.task.model.variables):
        np.testing.assert_array_equal(v.numpy(), ref.numpy(), err_msg=v.path)
    assert gin.config_str() == ""
    with pytest.raises(ValueError, match=r"trained a VQ-HiT autoencoder \(VQHiTTask\), not a GAN") as error:
        runs.load_generator(run)
    assert "\n" not in str(error.value)
    gan = tmp_path / "gan"
    shutil.copytree(run, gan, ignore=shutil.ignore_patterns("export"))
    (gan / "config.gin").write_text("Trainer.task = @GANTask()\nGANTask.generator_preset = 'hit_tiny_32'\n")
    assert runs.run_kind(str(gan)) == "gan"
    with pytest.raises(ValueError, match=r"trained a GAN \(GANTask\), not a VQ-HiT autoencoder"):
        runs.load_autoencoder(str(gan))
    (gan / "config.gin").write_text("VQHiTTask.model_preset = 'vqhit_demo_32'\n")  # another model: not restored
    with pytest.raises(ValueError, match=r"cannot restore model from .*: the run's autoencoder has \S+ of shape "
                       r"\[.*\], the checkpoint shape \[") as error:
        runs.load_autoencoder(str(gan))
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_the_export_defaults_to_the_run_directory_and_has_the_autoencoder_signatures(exported):
    run = os.path.dirname(os.path.dirname(exported.path))
    assert exported.path == os.path.join(run, "export", "2")
    assert sorted(os.listdir(os.path.join(run, "export"))) == ["2"]
    assert set(exported.loaded.signatures) == {"serving_default", "reconstruct", "encode", "decode"}
    images = exported.loaded.signatures["encode"].structured_input_signature[1]["images"]
    codes = exported.loaded.signatures["decode"].structured_input_signature[1]["codes"]
    assert (images.shape.as_list(), images.dtype) == ([None, 32, 32, 3], tf.uint8)
    assert (codes.shape.as_list(), codes.dtype) == ([None, 8, 8], tf.int32)


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 3])
def test_every_signature_equals_the_in_memory_autoencoder(exported, batch):
    signatures, model = exported.loaded.signatures, exported.model
    images = uint8_images(batch, seed=batch)
    expected_codes = model.encode(tf.cast(images, tf.float32) / 127.5 - 1.0).numpy()
    codes = signatures["encode"](images=images)["codes"]
    assert codes.dtype == tf.int32 and codes.shape == (batch, 8, 8)
    np.testing.assert_array_equal(codes.numpy(), expected_codes)
    decoded = signatures["decode"](codes=codes)["images"]
    assert decoded.dtype == tf.uint8 and decoded.shape == (batch, 32, 32, 3)
    expected = to_uint8(tf.clip_by_value(model.decode(expected_codes), -1.0, 1.0)).numpy()
    assert np.abs(decoded.numpy().astype(int) - expected.astype(int)).max() <= 1
    for name in ("reconstruct", "serving_default"):
        outputs = signatures[name](images=images)
        np.testing.assert_array_equal(outputs["codes"].numpy(), codes.numpy())
        np.testing.assert_array_equal(outputs["images"].numpy(), decoded.numpy())
    reconstructions = to_uint8(model(tf.cast(images, tf.float32) / 127.5 - 1.0)).numpy()  # the straight-through path
    assert np.abs(decoded.numpy().astype(int) - reconstructions.astype(int)).max() <= 1


@pytest.mark.slow
def test_out_of_range_codes_fail_when_the_graph_runs(exported):
    decode = exported.loaded.signatures["decode"]
    for bad in (32, -1):
        codes = np.zeros([2, 8, 8], np.int32)
        codes[1, 3, 4] = bad
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"codes must be in \[0, 32\)"):
            decode(codes=tf.constant(codes))
    body = {"signature_name": "decode", "instances": np.full([1, 8, 8], 31).tolist()}  # a REST request's rows
    assert decode(codes=tf.constant(body["instances"], tf.int32))["images"].shape == (1, 32, 32, 3)


@pytest.mark.slow
def test_wrong_shapes_and_dtypes_are_rejected(exported):
    signatures = exported.loaded.signatures
    for name in ("encode", "reconstruct", "serving_default"):
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"images must have shape \[batch, 32, 32, 3\]"):
            signatures[name](images=tf.zeros([2, 31, 32, 3], tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"codes must have shape \[batch, 8, 8\]"):
        signatures["decode"](codes=tf.zeros([1, 8, 9], tf.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"codes must have shape \[batch, 8, 8\]"):
        signatures["decode"](codes=tf.zeros([1, 8, 8, 1], tf.int32))  # the rank fed, not the signature's
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a int32 tensor but is a float"):
        signatures["decode"](codes=tf.zeros([1, 8, 8], tf.float32))
    # The same checks where no signature fixes the rank (the functions before export).
    endpoints = AutoencoderSignatures(exported.model).endpoints()
    encode = tf.function(endpoints["encode"][0], input_signature=[tf.TensorSpec(None, tf.uint8)])
    decode = tf.function(endpoints["decode"][0], input_signature=[tf.TensorSpec(None, tf.int32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"images must have shape \[batch, 32, 32, 3\]"):
        encode(tf.zeros([32, 32, 3], tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"codes must have shape \[batch, 8, 8\]"):
        decode(tf.zeros([8, 8], tf.int32))
    with pytest.raises(ValueError, match="already exists"):
        export_autoencoder(exported.model, os.path.dirname(exported.path), 2)


@pytest.mark.slow
def test_which_is_a_one_line_error_for_a_vqhit_run(exported, tmp_path):
    run = os.path.dirname(os.path.dirname(exported.path))
    result = subprocess.run([sys.executable, "tools/export.py", f"--model_dir={run}", "--which=generator",
                             f"--export_dir={tmp_path}"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0 and result.stdout == "" and os.listdir(tmp_path) == []
    assert result.stderr.splitlines() == [f"error: --which is for GAN runs; {run} trained VQ-HiT, whose "
                                          "autoencoder is exported"], result.stderr


@pytest.mark.slow
def test_saved_model_cli_lists_and_runs_the_signatures(exported, tmp_path):
    show = subprocess.run([*CLI, "show", "--dir", exported.path, "--all"], capture_output=True, text=True, env=ENV,
                          timeout=300)
    assert show.returncode == 0, show.stderr[-2000:]
    for name in ("serving_default", "reconstruct", "encode", "decode"):
        assert f"signature_def['{name}']" in show.stdout
    assert "inputs['codes']" in show.stdout and "shape: (-1, 8, 8)" in show.stdout
    assert "inputs['images']" in show.stdout and "shape: (-1, 32, 32, 3)" in show.stdout
    assert "dtype: DT_UINT8" in show.stdout and "dtype: DT_INT32" in show.stdout
    codes = np.arange(2 * 64).reshape(2, 8, 8) % 32
    np.save(tmp_path / "codes.npy", codes.astype(np.int32))
    run = subprocess.run([*CLI, "run", "--dir", exported.path, "--tag_set", "serve", "--signature_def", "decode",
                          "--inputs", f"codes={tmp_path / 'codes.npy'}", "--outdir", str(tmp_path / "out")],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]  # the TF1-style loader TF Serving also uses
    images = np.load(tmp_path / "out" / "images.npy")
    expected = exported.loaded.signatures["decode"](codes=tf.constant(codes, tf.int32))["images"].numpy()
    np.testing.assert_array_equal(images, expected)
