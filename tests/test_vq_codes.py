"""tools/vq_codes.py: images (a folder, or the run's DataSource) -> code indices equal to the model's encode of the
images prepared as evaluation images are; codes -> PNGs equal to its decode; the tool's one-line errors."""

import os
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from hit.core.images import to_uint8
from hit.data.pipeline import DataSource
from hit.data.preprocessing import preprocess
from hit.inference import runs
from hit.tasks.vqhit import VQHiTTask
from hit.train.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_GIN = """
hit.tasks.VQHiTTask.model_preset = 'vqhit_tiny_32'
hit.tasks.VQHiTTask.discriminator_preset = 'stylegan_d_tiny_32'
hit.tasks.VQHiTTask.perceptual_weight = 0.0
"""
SIZES = {"a.png": (32, 32), "b.png": (40, 56), "sub/c.png": (64, 48)}  # one as is, two centre-cropped and resized


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(model_dir, the run's autoencoder, a folder of PNGs, their uint8 arrays by name) of a 2-step VQ-HiT run."""
    root = tmp_path_factory.mktemp("vq_codes")
    model_dir = str(root / "run")
    gin.clear_config()
    gin.parse_config(RUN_GIN)
    Trainer(task=VQHiTTask(), model_dir=model_dir, train_steps=2, global_batch_size=4, steps_per_loop=2,
            checkpoint_every=2, sample_every=0, jit_compile=False).train()
    gin.clear_config()
    rng = np.random.default_rng(0)
    images = {}
    for name, (h, w) in SIZES.items():
        # Smooth images, so that bicubic resizing changes them little: codes then depend on the content.
        base = rng.integers(0, 256, (4, 4, 3)).astype(np.float32)
        images[name] = tf.cast(tf.image.resize(base[None], [h, w])[0], tf.uint8).numpy()
        os.makedirs(os.path.dirname(root / "images" / name), exist_ok=True)
        tf.io.write_file(str(root / "images" / name), tf.io.encode_png(images[name]))
    return model_dir, runs.load_autoencoder(model_dir), str(root / "images"), images


def run_tool(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "vq_codes.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_one_line_error(result, start):
    assert result.returncode != 0 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(f"error: {start}"), result.stderr


@pytest.mark.slow
def test_images_to_codes_to_images(run, tmp_path):
    model_dir, model, folder, images = run
    output = str(tmp_path / "codes.npy")
    result = run_tool(f"--model_dir={model_dir}", f"--images={folder}", f"--output={output}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert output in result.stdout
    codes = np.load(output)
    assert codes.dtype == np.int32 and codes.shape == (3, 8, 8)
    with open(tmp_path / "codes.files.txt") as f:
        assert f.read().splitlines() == sorted(SIZES)
    prepared = tf.stack([preprocess(images[name], 32, crop="center") for name in sorted(SIZES)])
    np.testing.assert_allclose(prepared[0], images["a.png"] / 127.5 - 1.0, atol=1e-6)  # 32x32 passes unchanged
    np.testing.assert_array_equal(codes, model.encode(prepared).numpy())
    assert codes.min() >= 0 and codes.max() < 32 and len(np.unique(codes)) > 1

    decoded = tmp_path / "decoded"
    result = run_tool(f"--model_dir={model_dir}", f"--codes={output}", f"--output={decoded}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(os.listdir(decoded)) == ["000000.png", "000001.png", "000002.png"]
    pngs = np.stack([tf.io.decode_png(tf.io.read_file(str(decoded / f"{i:06d}.png"))).numpy() for i in range(3)])
    expected = to_uint8(tf.clip_by_value(model.decode(codes), -1.0, 1.0)).numpy()
    assert pngs.shape == (3, 32, 32, 3)
    assert np.abs(pngs.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.slow
def test_codes_of_the_runs_data_source(run, tmp_path):
    model_dir, model, _, _ = run
    output = str(tmp_path / "eval.npy")
    result = run_tool(f"--model_dir={model_dir}", "--data_source", "--num_images=3", f"--output={output}")
    assert result.returncode == 0, result.stderr[-2000:]
    images = next(iter(DataSource().eval_dataset(3, 3)))["image"]  # the run binds no DataSource: its defaults
    np.testing.assert_array_equal(np.load(output), model.encode(images).numpy())
    with open(tmp_path / "eval.files.txt") as f:
        assert f.read().splitlines() == ["random:eval:000000", "random:eval:000001", "random:eval:000002"]


@pytest.mark.slow
def test_an_undecodable_image_is_a_one_line_error_naming_it(run, tmp_path):
    model_dir, _, folder, _ = run
    bad = tmp_path / "images"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    tf.io.gfile.copy(os.path.join(folder, "a.png"), str(bad / "a.png"))
    result = run_tool(f"--model_dir={model_dir}", f"--images={bad}", f"--output={tmp_path / 'codes.npy'}")
    assert_one_line_error(result, f"{bad / 'broken.png'} cannot be decoded (")
    assert not (tmp_path / "codes.npy").exists()


@pytest.mark.slow
@pytest.mark.parametrize("codes, message", [
    (np.stack([np.full([8, 8], 32), np.full([8, 8], -1)]), "codes must be in [0, 32), got values in [-1, 32]"),
    (np.zeros([2, 4, 4], np.int32), "{path} holds codes of shape [2, 4, 4]; this run's model decodes [N, 8, 8]"),
    (np.zeros([2, 8, 8], np.float32), "{path} holds float32 values; codes are integers"),
])
def test_bad_codes_are_one_line_errors(run, tmp_path, codes, message):
    path = str(tmp_path / "codes.npy")
    np.save(path, codes)
    result = run_tool(f"--model_dir={run[0]}", f"--codes={path}", f"--output={tmp_path / 'out'}")
    assert_one_line_error(result, message.format(path=path))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_usage_errors_are_one_line(tmp_path):
    missing = str(tmp_path / "no_run")
    assert_one_line_error(run_tool(f"--model_dir={missing}", f"--codes={tmp_path / 'c.npy'}", "--output=x"),
                          f"no checkpoint found in {missing}")
    assert_one_line_error(run_tool(f"--model_dir={missing}", "--images=x", "--codes=y", "--output=z"),
                          "give exactly one of --images, --data_source")
