"""The Fashion-MNIST demo VAE: save_sd_vae -> load_sd_vae round trips (every tensor, the config in the header,
explicit options winning, latent_resolution), the scale factor through decode, the training function lowering the
loss and measuring the scale factor, and tools/train_demo_vae.py end to end on IDX files the test writes."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import safetensors
import tensorflow as tf
from safetensors.numpy import load_file, save_file

from hit.models.latent_space import SCALE_FACTOR
from hit.models.sd_vae import SDVAE
from hit.models.weights.sd_vae_torch import load_sd_vae, read_config, save_sd_vae, weight_mapping
from hit.train import demo_vae
from tests.idx_files import write_idx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Factor 2 (two levels), one channel: 8 x 8 x 1 images -> 4 x 4 x 2 latents; a width change in both halves.
TINY = dict(channels=8, channel_multipliers=(1, 2), num_res_blocks=1, latent_channels=2, groups=4, image_channels=1)

# Every test builds and runs VAEs: 4-9 s each on 2 cores, over the fast tier's limit; the whole suite runs them.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(3)
    vae = SDVAE(8, scale_factor=0.75, **TINY).build_symbolic()
    for v in vae.weights:  # GroupNorm's gamma 1 and beta 0 would hide a swapped gamma / beta
        v.assign(v + np.random.default_rng(len(v.path)).normal(0, 0.05, v.shape).astype(np.float32))
    return vae


def images(n, size=8, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 1)).astype(np.float32)


def test_save_load_round_trip_gives_identical_outputs(tiny, tmp_path):
    path = str(tmp_path / "vae.safetensors")
    save_sd_vae(tiny, path, info={"steps": 5})
    tensors = load_file(path)
    keys = {key for key, _ in weight_mapping(tiny, "ldm").values()}
    assert set(tensors) == keys and len(keys) == len(tiny.weights)  # every tensor once, in ldm naming
    assert tensors["encoder.conv_in.weight"].shape == (8, 1, 3, 3)  # PyTorch's OIHW
    assert not os.path.exists(path + ".tmp")
    loaded = load_sd_vae(path)
    assert loaded.get_config() == tiny.get_config()  # resolution and scale factor too
    assert {v.path: v.numpy().tolist() for v in loaded.weights} == {v.path: v.numpy().tolist() for v in tiny.weights}
    x = images(3)
    np.testing.assert_array_equal(loaded(x).numpy(), tiny(x).numpy())
    z = np.random.default_rng(1).normal(size=(2, 4, 4, 2)).astype(np.float32)
    np.testing.assert_array_equal(loaded.decode(z).numpy(), tiny.decode(z).numpy())


def test_the_header_holds_the_config_and_explicit_options_win(tiny, tmp_path):
    path = str(tmp_path / "vae.safetensors")
    save_sd_vae(tiny, path, info={"steps": 5})
    with safetensors.safe_open(path, "np") as f:
        metadata = f.metadata()
    assert json.loads(metadata["channel_multipliers"]) == [1, 2] and json.loads(metadata["scale_factor"]) == 0.75
    assert json.loads(metadata["info"]) == {"steps": 5}
    assert read_config(path) == {"resolution": 8, "scale_factor": 0.75, **TINY, "channel_multipliers": [1, 2]}
    vae = load_sd_vae(path, latent_resolution=6, scale_factor=2.0)  # factor 2: 12 x 12 images
    assert (vae.resolution, vae.downsampling_factor, vae.scale_factor) == (12, 2, 2.0)
    with pytest.raises(ValueError, match=r"give resolution \(16\) or latent_resolution \(6\), not both"):
        load_sd_vae(path, 16, latent_resolution=6)


@pytest.mark.slow
def test_explicit_resolution_and_widths(tiny, tmp_path):
    path = _saved(tiny, tmp_path)
    assert load_sd_vae(path, 16).resolution == 16
    with pytest.raises(ValueError, match="tensor"):  # the file's tensors do not fit explicit other widths
        load_sd_vae(path, channels=16)


def test_files_without_the_config_keep_the_defaults_and_bad_values_are_named(tiny, tmp_path):
    tensors = load_file(_saved(tiny, tmp_path))
    save_file(tensors, str(tmp_path / "bare.safetensors"), metadata={"format": "pt"})
    assert read_config(str(tmp_path / "bare.safetensors")) == {}
    vae = load_sd_vae(str(tmp_path / "bare.safetensors"), **TINY)
    assert (vae.resolution, vae.scale_factor) == (256, SCALE_FACTOR)
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata={"groups": "four"})
    with pytest.raises(ValueError, match="metadata 'groups' is not JSON: 'four'"):
        load_sd_vae(str(tmp_path / "bad.safetensors"))
    save_file(tensors, str(tmp_path / "neg.safetensors"), metadata={**{k: json.dumps(v) for k, v in TINY.items()},
                                                                   "scale_factor": "-1"})
    with pytest.raises(ValueError, match="scale_factor must be a positive number, got -1"):
        load_sd_vae(str(tmp_path / "neg.safetensors"))


def _saved(vae, tmp_path):
    path = str(tmp_path / "saved.safetensors")
    save_sd_vae(vae, path)
    return path


def test_decode_divides_by_the_vaes_scale_factor(tiny):
    z = np.random.default_rng(2).normal(size=(2, 4, 4, 2)).astype(np.float32)
    unscaled = tiny.decoder(tiny.post_quant_conv(z)).numpy()
    np.testing.assert_allclose(tiny.decode(z * 0.75).numpy(), unscaled, rtol=1e-5, atol=1e-5)
    mean, _ = tiny.encode(images(2))
    np.testing.assert_allclose(tiny(images(2)).numpy(), tiny.decode(mean * 0.75).numpy(), rtol=1e-5, atol=1e-5)
    for bad in (0, -0.5, float("inf"), "0.2", True):
        with pytest.raises(ValueError, match="scale_factor must be a positive number"):
            SDVAE(8, scale_factor=bad, **TINY)


@pytest.mark.slow
def test_training_lowers_the_loss_and_measures_the_scale_factor():
    keras.utils.set_random_seed(0)
    vae = SDVAE(8, **TINY)
    y, x = np.mgrid[:8, :8]
    phase = np.random.default_rng(0).uniform(0, 6.3, (256, 1, 1))
    data = (127.5 + 127 * np.sin(x / 2 + phase) * np.cos(y / 3 - phase))[..., None].astype(np.uint8)  # stripes
    losses = demo_vae.train_vae(vae, data, steps=40, batch_size=16, learning_rate=3e-3, log_every=0)
    assert losses.shape == (40,) and losses[-5:].mean() < 0.7 * losses[:5].mean()
    std = demo_vae.latent_std(vae, data[:64])
    mean, sd = vae.encode(demo_vae.to_float(data[:64]))
    assert np.isclose(std, np.sqrt(np.mean(np.square(mean)) + np.mean(np.square(sd)) - np.mean(mean) ** 2), rtol=0.1)
    psnr = demo_vae.reconstruction_psnr(vae, data[:10])
    x = demo_vae.to_float(data[:10])
    mse = np.mean((np.clip(vae(x).numpy(), -1, 1) - x.numpy()) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(psnr, 10 * np.log10(4 / mse), rtol=1e-4)


def test_loss_terms_follow_ldm():
    vae = SDVAE(8, **TINY)
    x = tf.constant(images(4))
    loss, rec, kl = demo_vae.vae_loss(vae, x, tf.constant([1, 2], tf.int64), kl_weight=0.5)
    assert np.isclose(float(loss), float(rec) + 0.5 * float(kl), rtol=1e-5)
    mean, std = vae.encode(x)
    expected_kl = 0.5 * np.sum(mean ** 2 + std ** 2 - 1 - np.log(std ** 2), axis=(1, 2, 3)).mean()
    assert np.isclose(float(kl), expected_kl, rtol=1e-4)
    with pytest.raises(ValueError, match="unknown reconstruction loss 'l3'"):
        demo_vae.train_vae(vae, np.zeros((4, 8, 8, 1), np.uint8), 1, 2, reconstruction="l3")
    with pytest.raises(ValueError, match="need at least batch_size = 8 images, got 4"):
        demo_vae.train_vae(vae, np.zeros((4, 8, 8, 1), np.uint8), 1, 8)


@pytest.mark.slow
def test_the_tool_trains_and_writes_a_loadable_file(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 200), ("test", 50)):
        write_idx(tmp_path, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).tolist(), split)
    output = str(tmp_path / "demo.safetensors")
    config = dict(channels=8, channel_multipliers=[1, 2], groups=4)
    result = subprocess.run(
        [sys.executable, "tools/train_demo_vae.py", f"--output={output}", "--steps=3", "--batch_size=8",
         f"--config={json.dumps(config)}", f"--data_dir={tmp_path}"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["steps"] == 3 and info["output"] == output and np.isfinite(info["test_psnr"])
    vae = load_sd_vae(output)
    assert (vae.resolution, vae.image_channels, vae.get_config()["channels"]) == (32, 1, 8)
    assert vae.downsampling_factor == 2 and np.isclose(vae.scale_factor, info["scale_factor"])
    assert np.isclose(info["scale_factor"], 1 / info["latent_std"])

    result = subprocess.run([sys.executable, "tools/train_demo_vae.py", f"--output={tmp_path / 'x.h5'}"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"error: --output must end in .safetensors, got {tmp_path}/x.h5"
