"""Latent data sets (REPA's preprocessing, as official GAT's README prescribes): ADM's centre crop,
tools/extract_latents.py on images the test writes (tiny VAE and DINOv2 with random weights), the records against
the models applied directly, resume after an interrupted shard, the latents source (posterior sampling, scale
factor, determinism, sharding), damaged sets named when opened, and tools/decode_latents.py."""

import json
import os
import re
import shutil
import struct
import subprocess
import sys

import keras
import numpy as np
import PIL.Image
import pytest
import tensorflow as tf
from safetensors.numpy import save_file

from hit.core.seeds import stateless_seed
from hit.data import latents
from hit.data.pipeline import DataSource
from hit.data.preprocessing import adm_center_crop
from hit.models.dinov2 import DINOv2
from hit.models.latent_space import SCALE_FACTOR, sample_latents
from hit.models.sd_vae import SDVAE
from hit.models.weights.dinov2_hf import hf_weight_map
from hit.models.weights.sd_vae_torch import conv_weight, linear_weight, save_sd_vae, weight_mapping

from hit.inference.latent_extraction import Encoder, extract

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# f8 like SD's VAE (four levels), tiny: 32 px images -> 4 x 4 x 4 latents.
TINY_VAE = dict(channels=8, channel_multipliers=(1, 1, 1, 1), num_res_blocks=1, groups=4)
TINY_DINO = dict(image_size=28, patch_size=14, width=16, depth=1, heads=2, position_grid=4)
GRAY_VAE = dict(TINY_VAE, latent_channels=2, image_channels=1, scale_factor=0.5)  # a demo-like VAE of one's own
SIZES = [(40, 56), (64, 48), (32, 32), (100, 80), (70, 64)]  # (H, W): upscaled, box-halved, as is, ...


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    vae = SDVAE(32, **TINY_VAE).build_symbolic()
    dino = DINOv2(**TINY_DINO)
    return vae, dino


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """10 PNGs of several sizes; returns (folder, the images in listing order)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    images = []
    for i in range(10):
        h, w = SIZES[i % len(SIZES)]
        y, x = np.mgrid[:h, :w]
        image = np.stack([x * 255 // w, y * 255 // h, rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
        tf.io.write_file(str(root / f"{i:02d}.png"), tf.io.encode_png(image))
        images.append(image)
    return str(root), images


def assert_same_records(a, b):
    """Records of two extractions of the same images (other batches, replicas or processes): equal up to float
    rounding, which can move a float16 DINOv2 feature by one float16 step (1e-3 relative) on some CPUs."""
    assert a.keys() == b.keys()
    for name in b:
        tolerance = 2e-3 if name.startswith("dino") else 1e-5
        np.testing.assert_allclose(a[name], b[name], rtol=tolerance, atol=tolerance, err_msg=name)


def fields_of(path):
    """{field: numpy arrays of every record} of the set in `path`, in shard order."""
    out = {}
    meta = latents.read_metadata(path)
    for record in tf.data.TFRecordDataset(latents.shard_files(path)):
        for name, value in latents.parse(record, meta["fields"]).items():
            out.setdefault(name, []).append(value.numpy())
    return {name: np.stack(values) for name, values in out.items()}


# ---- ADM's centre crop ------------------------------------------------------------------------------------------

def test_adm_crop_box_halves_then_cuts_the_centre():
    # 64 x 80 at size 32: the shorter side is 2 x 32, so one 2x2 box average (32 x 40), then the centre 32 columns.
    image = np.random.default_rng(1).integers(0, 256, (64, 80, 3)).astype(np.uint8)
    box = image.reshape(32, 2, 40, 2, 3).astype(np.float64).mean(axis=(1, 3))
    got = adm_center_crop(image, 32)
    assert got.shape == (32, 32, 3) and got.dtype == np.uint8
    np.testing.assert_allclose(got, box[:, 4:36], atol=1)


def test_adm_crop_resizes_the_shorter_side_and_centres():
    # 40 x 56 -> 32 x round(44.8) = 45 with PIL's bicubic, then columns 6 .. 38; gray images keep one channel.
    image = np.zeros((40, 56, 1), np.uint8)
    image[:, 28:] = 255  # the left half dark: the edge stays in the middle of the crop
    got = adm_center_crop(image, 32)
    assert got.shape == (32, 32, 1)
    expected = np.asarray(PIL.Image.fromarray(image[..., 0]).resize((45, 32), PIL.Image.BICUBIC))[:, 6:38]
    np.testing.assert_array_equal(got[..., 0], expected)
    assert (got[:, :14] == 0).all() and (got[:, 18:] == 255).all()
    with pytest.raises(ValueError, match="expected a uint8"):
        adm_center_crop(np.zeros((8, 8, 3), np.float32), 4)


# ---- extraction -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def extracted(models, folder, tmp_path_factory):
    vae, dino = models
    out = str(tmp_path_factory.mktemp("latents"))
    source = DataSource("folder", resolution=32, data_dir=folder[0])
    summary = extract(source, out, Encoder(vae, dino, flipped=True, batch_size=4), resolution=32, shard_size=4)
    assert summary.startswith("wrote 10 images in 3 shards")
    return out


@pytest.mark.slow
def test_records_hold_the_models_outputs_in_source_order(models, folder, extracted):
    vae, dino = models
    shards = [latents.SHARD.format(k) + suffix for k in range(3) for suffix in ("", latents.SIDECAR)]
    assert sorted(os.listdir(extracted)) == sorted([latents.METADATA] + shards)
    got = fields_of(extracted)
    crops = np.stack([adm_center_crop(image, 32) for image in folder[1]])
    for suffix, view in (("", crops), ("_flip", crops[:, :, ::-1])):
        mean, std = vae.encode(tf.cast(view, tf.float32) / 127.5 - 1.0)
        np.testing.assert_allclose(got["moments" + suffix], np.concatenate([mean, std], -1), atol=1e-5)
        cls, patches = dino.features(tf.constant(view))
        np.testing.assert_allclose(got["dino_cls" + suffix], cls, rtol=2e-3, atol=2e-3)  # stored as float16
        np.testing.assert_allclose(got["dino_patches" + suffix], patches, rtol=2e-3, atol=2e-3)
    assert got["moments"].shape == (10, 4, 4, 8) and got["dino_patches"].shape == (10, 4, 16)
    np.testing.assert_array_equal(got["label"], -1)
    meta = latents.read_metadata(extracted)
    assert meta["fields"]["dino_cls"]["dtype"] == "float16" and meta["labels"] is False
    assert meta["num_images"] == 10 and meta["scale_factor"] == SCALE_FACTOR


@pytest.mark.slow
def test_eval_dataset_gives_scaled_posterior_means(extracted):
    got = fields_of(extracted)
    batches = list(DataSource("latents", data_dir=extracted, with_labels=False).eval_dataset(3))
    assert [len(b["latent"]) for b in batches] == [3, 3, 3, 1]
    np.testing.assert_allclose(np.concatenate([b["latent"] for b in batches]),
                               got["moments"][..., :4] * SCALE_FACTOR, rtol=1e-6)
    with pytest.raises(ValueError, match="has no labels"):
        DataSource("latents", data_dir=extracted, with_labels=True).eval_dataset(3)


@pytest.mark.slow
def test_labels_and_the_center_crop_from_fashion_mnist(models, tmp_path):
    vae, _ = models
    source = DataSource("fashion_mnist", resolution=32, with_labels=True)
    extract(source, str(tmp_path), Encoder(vae, batch_size=4), resolution=32, crop="center", num_images=6,
            shard_size=8)
    got = fields_of(str(tmp_path))
    assert set(got) == {"moments", "label"} and got["moments"].shape == (6, 4, 4, 8)
    np.testing.assert_array_equal(got["label"], [9, 0, 0, 3, 0, 2])  # the first Fashion-MNIST training labels
    batch = next(iter(DataSource("latents", data_dir=str(tmp_path), with_labels=True).eval_dataset(6)))
    np.testing.assert_array_equal(batch["label"], [9, 0, 0, 3, 0, 2])


@pytest.mark.slow  # 7-8 s on 2 cores (building and saving two VAEs)
def test_a_one_channel_vae_records_its_scale_factor_and_sets_use_it(tmp_path):
    keras.utils.set_random_seed(1)
    vae = SDVAE(32, **GRAY_VAE).build_symbolic()
    out = str(tmp_path / "set")
    extract(DataSource("random", resolution=32, with_labels=False), out, Encoder(vae, batch_size=2), resolution=32,
            num_images=2)
    assert latents.read_metadata(out)["scale_factor"] == 0.5
    stored = fields_of(out)
    assert stored["moments"].shape == (2, 4, 4, 4)  # f8, 2 latent channels: [mean; std]
    mean, std = np.split(stored["moments"], 2, axis=-1)
    batch = next(iter(DataSource("latents", data_dir=out, with_labels=False).eval_dataset(2)))
    np.testing.assert_allclose(batch["latent"], mean * 0.5, rtol=1e-6)
    context = tf.distribute.InputContext()
    element = next(iter(DataSource("latents", data_dir=out, with_labels=False, shuffle_buffer=1).train_dataset(
        context, 1, seed=3)))
    expected = sample_latents(mean[0], std[0], stateless_seed("data", 3, 0, 0), scale_factor=0.5)
    np.testing.assert_allclose(element["latent"][0], expected, rtol=1e-6, atol=1e-7)
    metadata = latents.read_metadata(out)
    del metadata["scale_factor"]  # sets that record none are SD's
    latents.write_metadata(out, metadata)
    batch = next(iter(DataSource("latents", data_dir=out, with_labels=False).eval_dataset(2)))
    np.testing.assert_allclose(batch["latent"], mean * SCALE_FACTOR, rtol=1e-6)
    latents.write_metadata(out, {**metadata, "scale_factor": "big"})
    with pytest.raises(ValueError, match=r"scale_factor in .*latents.json must be a positive number, got 'big'"):
        DataSource("latents", data_dir=out, with_labels=False).eval_dataset(2)


@pytest.mark.slow  # 7 s on 2 cores
def test_a_one_channel_vae_encodes_the_luma(tmp_path):
    keras.utils.set_random_seed(1)
    vae = SDVAE(32, **GRAY_VAE).build_symbolic()
    rgb = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    gray = np.repeat(rgb[..., :1], 3, axis=-1)
    encoder = Encoder(vae, batch_size=2)
    for images, luma in ((rgb, rgb @ np.array([0.299, 0.587, 0.114])), (gray, gray[..., 0])):
        mean, std = vae.encode((luma[..., None] / 127.5 - 1).astype(np.float32))
        np.testing.assert_allclose(encoder(images)["moments"], np.concatenate([mean, std], -1), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="the VAE takes 2-channel images; extraction feeds 1 .gray. or 3 .RGB."):
        Encoder(SDVAE(32, **{**GRAY_VAE, "image_channels": 2}), batch_size=2)


class Interrupted(Exception):
    pass


class FailingEncoder(Encoder):
    """Raises on its `fail_at`-th call, like a preempted machine."""

    def __init__(self, *args, fail_at, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls, self.fail_at = 0, fail_at

    def __call__(self, images):
        self.calls += 1
        if self.calls == self.fail_at:
            raise Interrupted()
        return super().__call__(images)


@pytest.mark.slow
def test_resume_redoes_the_half_written_shard_only(models, folder, extracted, tmp_path, caplog):
    vae, dino = models
    source = DataSource("folder", resolution=32, data_dir=folder[0])
    out = str(tmp_path)
    # Batches of 2, shards of 4: calls 1-2 complete shard 0, call 3 starts shard 1, call 4 dies.
    with pytest.raises(Interrupted):
        extract(source, out, FailingEncoder(vae, dino, True, batch_size=2, fail_at=4), resolution=32, shard_size=4)
    assert sorted(os.listdir(out)) == sorted([latents.METADATA, latents.SHARD.format(0),
                                              latents.SHARD.format(0) + latents.SIDECAR,
                                              latents.SHARD.format(1) + latents.INCOMPLETE])
    assert len(latents.shard_files(out)) == 1  # readers see only the complete shard
    before = os.path.getmtime(os.path.join(out, latents.SHARD.format(0)))
    caplog.set_level("INFO")
    encoder = FailingEncoder(vae, dino, True, batch_size=2, fail_at=0)
    summary = extract(source, out, encoder, resolution=32, shard_size=4)
    assert summary.startswith("wrote 6 images in 2 shards") and encoder.calls == 3
    assert "redoing the half-written shard 1" in caplog.text
    assert os.path.getmtime(os.path.join(out, latents.SHARD.format(0))) == before  # finished shards untouched
    resumed, whole = fields_of(out), fields_of(extracted)
    assert_same_records(resumed, whole)
    assert extract(source, out, encoder, resolution=32, shard_size=4).startswith("all 3 shards")
    with pytest.raises(ValueError, match=r"other settings \(shard_size: \[4\] there, \[5\] now\)"):
        extract(source, out, encoder, resolution=32, shard_size=5)


@pytest.mark.slow
def test_tasks_split_the_shards(models, folder, tmp_path):
    vae, _ = models
    source = DataSource("folder", resolution=32, data_dir=folder[0])
    for task in (1, 0):
        extract(source, str(tmp_path), Encoder(vae, batch_size=4), resolution=32, shard_size=3, task_index=task,
                num_tasks=2)
        files = sorted(f for f in os.listdir(tmp_path) if f.endswith(".tfrecord"))
        assert files == ([latents.SHARD.format(k) for k in (1, 3)] if task else
                         [latents.SHARD.format(k) for k in range(4)])
    assert len(fields_of(str(tmp_path))["moments"]) == 10


@pytest.mark.slow
def test_two_replicas_give_the_same_records(models, folder, extracted, tmp_path, two_replicas):
    vae, dino = models
    source = DataSource("folder", resolution=32, data_dir=folder[0])
    extract(source, str(tmp_path), Encoder(vae, dino, True, two_replicas, batch_size=4), resolution=32,
            shard_size=4)
    mirrored, single = fields_of(str(tmp_path)), fields_of(extracted)
    assert_same_records(mirrored, single)
    with pytest.raises(ValueError, match="batch_size 3 is not divisible by the 2 replicas"):
        Encoder(vae, strategy=two_replicas, batch_size=3)


# ---- the latents source ------------------------------------------------------------------------------------------

def one_shard_set(models, folder, path):
    """The folder's 10 images in one shard, with DINOv2 features (an identity per record)."""
    vae, dino = models
    extract(DataSource("folder", resolution=32, data_dir=folder[0]), path, Encoder(vae, dino, batch_size=5),
            resolution=32, shard_size=16)
    return fields_of(path)


@pytest.mark.slow
def test_training_samples_the_posterior_per_element_and_step(models, folder, tmp_path):
    stored = one_shard_set(models, folder, str(tmp_path))
    source = DataSource("latents", data_dir=str(tmp_path), with_labels=False, shuffle_buffer=1)
    context = tf.distribute.InputContext()

    def first(seed, start_step=0, n=12):
        return next(iter(source.train_dataset(context, n, seed, start_step)))

    batch = first(seed=3)
    assert batch["latent"].shape == (12, 4, 4, 4) and "label" not in batch and batch["dino_cls"].shape == (12, 16)
    for i in range(12):  # one file, buffer 1: element i is record i mod 10
        mean, std = np.split(stored["moments"][i % 10], 2, axis=-1)
        expected = sample_latents(mean, std, stateless_seed("data", 3, 0, i))
        np.testing.assert_allclose(batch["latent"][i], expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(batch["dino_cls"][i], stored["dino_cls"][i % 10])
    assert not np.allclose(batch["latent"][0], batch["latent"][10])  # the same record, a new draw on the next pass
    np.testing.assert_array_equal(first(seed=3)["latent"], batch["latent"])  # deterministic under the seed
    assert not np.allclose(first(seed=4)["latent"], batch["latent"])
    assert not np.allclose(first(seed=3, start_step=1)["latent"], batch["latent"])


@pytest.mark.slow
def test_input_pipelines_read_disjoint_shards(models, folder, extracted):
    def ids(pipeline):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline)
        dataset = DataSource("latents", data_dir=extracted, with_labels=False).train_dataset(context, 1, 0)
        return {tuple(np.round(b["dino_cls"][0], 3)) for b in dataset.take(6)}

    stored = {tuple(np.round(v, 3)) for v in fields_of(extracted)["dino_cls"]}
    first, second = ids(0), ids(1)
    assert first | second == stored and not first & second  # shards 0, 2 (6 images) and shard 1 (4)
    assert len(first) == 6 and len(second) == 4


def test_missing_or_bad_sets_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match=r"no latent data set in .*missing latents.json.*extract_latents"):
        latents.read_metadata(str(tmp_path))
    latents.write_metadata(str(tmp_path), {"format_version": 1, "labels": False,
                                           "fields": latents.field_specs([4, 4, 4])})
    with pytest.raises(ValueError, match="no complete shards"):
        DataSource("latents", data_dir=str(tmp_path), with_labels=False).eval_dataset(2)
    (tmp_path / latents.METADATA).write_text("{")
    with pytest.raises(ValueError, match="is not valid JSON"):
        latents.read_metadata(str(tmp_path))
    with pytest.raises(ValueError, match="field moments has shape"):
        latents.serialize(latents.field_specs([4, 4, 4]), {"moments": np.zeros((4, 4, 4)), "label": 0})


# ---- damaged sets ------------------------------------------------------------------------------------------------

def shard_copy(extracted, tmp_path):
    """A copy of the extracted set (10 images in shards of 4, 4, 2) and the path of its shard 1."""
    out = str(tmp_path / "set")
    shutil.copytree(extracted, out)
    return out, latents.shard_path(out, 1)


def cut(path, records):
    """Keep the first `records` (a fraction: mid-record) of the file's records, all of one size here."""
    data = open(path, "rb").read()
    size = struct.unpack("<Q", data[:8])[0] + 16  # length, its CRC, the data, its CRC
    open(path, "wb").write(data[:int(records * size)])
    return len(data), int(records * size)


@pytest.mark.slow
@pytest.mark.parametrize("records", [3, 2.5])
def test_a_cut_shard_is_named(extracted, tmp_path, records):
    # Cut on a record boundary, the shard would read as 3 images without a word; cut inside a record, as a
    # DataLossError that names no file.
    out, shard = shard_copy(extracted, tmp_path)
    size, now = cut(shard, records)
    message = f"shard {shard} is damaged: {now} bytes, its sidecar says {size}; re-extract it: delete it and run"
    source = DataSource("latents", data_dir=out, with_labels=False)
    with pytest.raises(ValueError, match=re.escape(message)):
        source.eval_dataset(2)
    with pytest.raises(ValueError, match=re.escape(message)):
        source.train_dataset(tf.distribute.InputContext(), 2, seed=0)


@pytest.mark.slow
def test_missing_stray_and_miscounted_shards_are_named(extracted, tmp_path):
    out, shard = shard_copy(extracted, tmp_path)
    source = DataSource("latents", data_dir=out, with_labels=False)
    os.rename(shard, shard + ".bak")
    with pytest.raises(ValueError, match=re.escape(
            f"latent data set {out} lacks shard latents-00001.tfrecord (latents.json: 10 images in 3 shards, "
            "1 missing); finish it with tools/extract_latents.py")):
        source.eval_dataset(2)
    os.rename(shard + ".bak", shard)
    shutil.copy(shard, latents.shard_path(out, 3))
    with pytest.raises(ValueError, match="holds latents-00003.tfrecord, not one of its shards"):
        source.eval_dataset(2)
    os.remove(latents.shard_path(out, 3))
    with open(shard + latents.SIDECAR) as f:
        sidecar = json.load(f)
    assert sidecar == {"records": 4, "bytes": os.path.getsize(shard)}
    latents.write_json(shard + latents.SIDECAR, {**sidecar, "records": 5})
    with pytest.raises(ValueError, match=re.escape(f"shard {shard} holds 5 records, 4 images by latents.json")):
        source.eval_dataset(2)
    latents.write_json(shard + latents.SIDECAR, {**sidecar, "records": 3})  # fine from a folder: it drops images
    source.eval_dataset(2)
    latents.write_metadata(out, {**latents.read_metadata(out), "source": "imagenet2012"})  # but not others
    with pytest.raises(ValueError, match=re.escape(f"shard {shard} holds 3 records, 4 images by latents.json")):
        source.eval_dataset(2)


@pytest.mark.slow
def test_a_set_without_sidecars_opens_with_a_warning(extracted, tmp_path, caplog):
    out, _ = shard_copy(extracted, tmp_path)
    for k in range(3):
        os.remove(latents.shard_path(out, k) + latents.SIDECAR)
    batches = list(DataSource("latents", data_dir=out, with_labels=False).eval_dataset(4))
    assert sum(len(b["latent"]) for b in batches) == 10
    warnings = [r.getMessage() for r in caplog.records if "sidecar" in r.getMessage()]
    assert warnings == [f"3 of the 3 shards in {out} have no sidecar (latents-00000.tfrecord.json, written before "
                        "sidecars): their sizes cannot be checked; tools/extract_latents.py with the set's settings "
                        "adds them"]


@pytest.mark.slow
def test_extracting_a_complete_set_again_adds_missing_sidecars_and_names_a_damaged_shard(models, folder, extracted,
                                                                                        tmp_path):
    vae, dino = models
    out, _ = shard_copy(extracted, tmp_path)
    sidecars = {k: open(latents.shard_path(out, k) + latents.SIDECAR).read() for k in range(3)}
    for k in range(3):
        os.remove(latents.shard_path(out, k) + latents.SIDECAR)
    source = DataSource("folder", resolution=32, data_dir=folder[0])
    encoder = Encoder(vae, dino, flipped=True, batch_size=4)
    assert extract(source, out, encoder, resolution=32, shard_size=4).startswith("all 3 shards")
    assert {k: open(latents.shard_path(out, k) + latents.SIDECAR).read() for k in range(3)} == sidecars
    os.remove(latents.shard_path(out, 1) + latents.SIDECAR)
    shard = latents.shard_path(out, 1)
    cut(shard, 2.5)
    with pytest.raises(ValueError, match=f"^shard {shard} is damaged \\(.*\\); re-extract it: delete it and run"):
        extract(source, out, encoder, resolution=32, shard_size=4)


@pytest.mark.slow
def test_undecodable_images_leave_short_or_empty_shards(models, folder, tmp_path, caplog):
    # Images 2, 3 (all of shard 1) and 5 cannot be decoded: the folder source drops them while extracting.
    images = tmp_path / "images"
    shutil.copytree(folder[0], images)
    for i in (2, 3, 5):
        png = (images / f"{i:02d}.png").read_bytes()
        start = png.index(b"IDAT") + 8  # garbage in the image data, the signature and the end intact
        (images / f"{i:02d}.png").write_bytes(png[:start] + bytes(b ^ 0xFF for b in png[start:start + 32])
                                             + png[start + 32:])
    out = str(tmp_path / "set")
    extract(DataSource("folder", resolution=32, data_dir=str(images)), out, Encoder(models[0], batch_size=2),
            resolution=32, shard_size=2, num_images=6)
    assert [json.load(open(latents.shard_path(out, k) + latents.SIDECAR))["records"] for k in range(3)] == [2, 0, 1]
    caplog.set_level("INFO")
    batches = list(DataSource("latents", data_dir=out, with_labels=False).eval_dataset(8))
    assert len(batches[0]["latent"]) == 3
    assert f"{out} holds 3 of its 6 images (the others could not be decoded when extracted)" in caplog.text


# ---- the command-line tools ------------------------------------------------------------------------------------

def vae_file(vae, path):
    """The model's weights as an ldm-named .safetensors file (the loader's mapping, inverted)."""
    inverse = {conv_weight: lambda w: np.transpose(w, (3, 2, 0, 1)), linear_weight: lambda w: w[0, 0].T}
    variables = {v.path: v.numpy() for v in vae.weights}
    save_file({key: np.ascontiguousarray(inverse.get(t, lambda w: w)(variables[p]))
               for p, (key, t) in weight_mapping(vae, "ldm").items()}, path)


def dino_file(dino, path):
    save_file({name: np.ascontiguousarray(v.numpy() if perm is None else np.transpose(v.numpy(), np.argsort(perm)))
               for name, (v, perm) in hf_weight_map(dino).items()}, path)


def run_tool(*args):
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_command_lines_extract_and_decode(models, folder, extracted, tmp_path):
    vae, dino = models
    vae_file(vae, str(tmp_path / "vae.safetensors"))
    dino_file(dino, str(tmp_path / "dino.safetensors"))
    out = tmp_path / "set"
    result = run_tool("tools/extract_latents.py", "--source=folder", f"--data_dir={folder[0]}", "--resolution=32",
                      f"--vae_weights={tmp_path / 'vae.safetensors'}", f"--vae_config={json.dumps(TINY_VAE)}",
                      f"--dinov2_weights={tmp_path / 'dino.safetensors'}", f"--dinov2_config={json.dumps(TINY_DINO)}",
                      "--flipped", "--shard_size=4", "--batch_size=4", f"--output_dir={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote 10 images in 3 shards" in result.stdout
    cli, direct = fields_of(str(out)), fields_of(extracted)
    assert_same_records(cli, direct)
    assert latents.read_metadata(str(out))["weights"] == {"vae": "vae.safetensors", "dinov2": "dino.safetensors"}

    np.save(tmp_path / "latents.npy", fields_of(extracted)["moments"][:3, ..., :4] * SCALE_FACTOR)
    for given in (out, tmp_path / "latents.npy"):
        result = run_tool("tools/decode_latents.py", f"--vae_weights={tmp_path / 'vae.safetensors'}",
                          f"--vae_config={json.dumps(TINY_VAE)}", f"--latents={given}", "--num_images=3",
                          f"--output={tmp_path / 'grid.png'}")
        assert result.returncode == 0, result.stderr[-2000:]
        grid = tf.io.decode_png(tf.io.read_file(str(tmp_path / "grid.png"))).numpy()
        assert grid.shape == (64, 64, 3)  # 3 images of 32 x 32 on a 2 x 2 grid
    decoded = vae.decode(tf.constant(fields_of(extracted)["moments"][:3, ..., :4] * SCALE_FACTOR))
    expected = tf.cast(tf.round((tf.clip_by_value(decoded, -1, 1) + 1) * 127.5), tf.uint8).numpy()
    np.testing.assert_allclose(grid[:32, :32].astype(int), expected[0].astype(int), atol=1)

    np.save(tmp_path / "bad.npy", np.zeros((2, 4, 4, 3), np.float32))
    result = run_tool("tools/decode_latents.py", f"--vae_weights={tmp_path / 'vae.safetensors'}",
                      f"--vae_config={json.dumps(TINY_VAE)}", f"--latents={tmp_path / 'bad.npy'}",
                      f"--output={tmp_path / 'x.png'}")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (f"error: {tmp_path / 'bad.npy'} holds latents of shape "
                                                      "[2, 4, 4, 3]; the VAE decodes [N, h, w, 4]")
    result = run_tool("tools/extract_latents.py", "--source=random", f"--vae_weights={tmp_path / 'vae.safetensors'}",
                      f"--vae_config={json.dumps(TINY_VAE)}", "--resolution=32", f"--output_dir={tmp_path / 'r'}")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == "error: the random source is endless; give --num_images"


@pytest.mark.slow
def test_command_lines_take_the_config_from_a_vae_file_of_ones_own(extracted, tmp_path):
    keras.utils.set_random_seed(1)
    vae_path = str(tmp_path / "demo.safetensors")
    save_sd_vae(SDVAE(32, **GRAY_VAE).build_symbolic(), vae_path)  # records its config, resolution 32 and scale
    out = str(tmp_path / "set")
    result = run_tool("tools/extract_latents.py", "--source=fashion_mnist", "--num_images=4", "--batch_size=4",
                      f"--vae_weights={vae_path}", f"--output_dir={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    metadata = latents.read_metadata(out)
    assert (metadata["resolution"], metadata["scale_factor"]) == (32, 0.5)
    assert fields_of(out)["moments"].shape == (4, 4, 4, 4)
    result = run_tool("tools/decode_latents.py", f"--vae_weights={vae_path}", f"--latents={out}",
                      f"--output={tmp_path / 'grid.png'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert tf.io.decode_png(tf.io.read_file(str(tmp_path / "grid.png"))).shape[:2] == (64, 64)
    result = run_tool("tools/decode_latents.py", f"--vae_weights={vae_path}", f"--latents={extracted}",
                      f"--output={tmp_path / 'x.png'}")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (f"error: the latent data set {extracted} is scaled by 0.18215, "
                                                      "the VAE decodes latents scaled by 0.5; decode it with the VAE "
                                                      "that made it")


@pytest.mark.slow
def test_the_training_iterator_checkpoints_and_resumes(extracted, tmp_path):
    dataset = DataSource("latents", data_dir=extracted, with_labels=False, shuffle_buffer=4).train_dataset(
        tf.distribute.InputContext(), 3, seed=0)
    iterator = iter(dataset)
    next(iterator)
    path = tf.train.Checkpoint(data=iterator).save(str(tmp_path / "ckpt"))
    expected = [next(iterator)["latent"].numpy() for _ in range(4)]
    restored = iter(dataset)
    tf.train.Checkpoint(data=restored).restore(path).assert_consumed()
    for batch in expected:
        np.testing.assert_array_equal(next(restored)["latent"], batch)
