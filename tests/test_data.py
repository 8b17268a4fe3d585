"""Input pipelines on small data the tests write themselves (and Debian's Fashion-MNIST when installed)."""

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from hit.data import fashion_mnist
from hit.data.pipeline import DataSource, data_stats
from hit.data.preprocessing import preprocess
from tests.idx_files import write_idx

CONTEXT = tf.distribute.InputContext()


def first_batch(source, batch=4, seed=0, context=CONTEXT, start_step=0):
    return next(iter(source.train_dataset(context, batch, seed, start_step)))


def write_colour_images(root, count, size=(20, 24)):
    """Images of one flat colour each (file i has value 10 * i + 5), half JPEG-free PNGs for exactness."""
    os.makedirs(root, exist_ok=True)
    for i in range(count):
        image = np.full((*size, 3), 10 * i + 5, np.uint8)
        tf.io.write_file(os.path.join(root, f"img_{i:02d}.png"), tf.io.encode_png(image))


def write_corrupt_png(path):
    """A PNG with its signature and IEND chunk intact but garbage inside the IDAT data: it passes the up-front
    checks and fails to decode."""
    png = tf.io.encode_png(np.random.default_rng(4).integers(0, 256, (20, 24, 3), dtype=np.uint8)).numpy()
    start = png.index(b"IDAT") + 8  # past the chunk type and the zlib header
    corrupt = png[:start] + bytes(b ^ 0xFF for b in png[start:start + 32]) + png[start + 32:]
    assert corrupt[:8] == png[:8] and corrupt[-12:] == png[-12:] and len(corrupt) == len(png)
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.io.decode_png(corrupt)
    path.write_bytes(corrupt)


def colour_ids(images):
    """Which file each [-1, 1] flat image came from."""
    values = np.round((images.numpy()[:, 0, 0, 0] + 1) * 127.5)
    return [int((v - 5) // 10) for v in values]


# ---- preprocessing ------------------------------------------------------------------------------------


def test_centre_crop_geometry_and_identity_resize():
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (40, 60, 3)), tf.uint8)
    out = preprocess(image, 20, crop="center", crop_proportion=0.5).numpy()
    # side 0.5 * 40 = 20, top (40 - 20 + 1) // 2 = 10, left (60 - 20 + 1) // 2 = 20; 20 -> 20 is an identity
    np.testing.assert_allclose(out, image.numpy()[10:30, 20:40] / 127.5 - 1.0, atol=1e-6)


def test_random_crop_is_a_window_of_the_right_size_and_depends_on_the_seed():
    image = np.random.default_rng(1).integers(0, 256, (16, 24, 3)).astype(np.uint8)
    windows = set()
    for seed in range(12):
        out = np.round((preprocess(image, 8, "random", 0.5, seed=tf.constant([seed, 0])).numpy() + 1) * 127.5)
        matches = [(t, l) for t in range(16 - 8 + 1) for l in range(24 - 8 + 1)
                   if np.array_equal(out, image[t:t + 8, l:l + 8])]
        assert len(matches) == 1
        windows.add(matches[0])
    assert len(windows) > 3


def test_flip_mirrors_some_samples_and_not_others():
    image = np.random.default_rng(2).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    plain, mirrored = image / 127.5 - 1.0, image[:, ::-1] / 127.5 - 1.0
    outcomes = []
    for seed in range(16):
        out = preprocess(image, 8, "fixed", flip=True, seed=tf.constant([seed, 3])).numpy()
        assert np.allclose(out, plain, atol=1e-6) or np.allclose(out, mirrored, atol=1e-6)
        outcomes.append(np.allclose(out, mirrored, atol=1e-6))
    assert 0 < sum(outcomes) < 16


def test_bicubic_overshoot_is_clipped_not_wrapped():
    # A hard black/white edge upsampled with bicubic overshoots below 0 and above 255; the official uint8 cast
    # wraps such values (-3.7 -> 253), so black would turn white. We clip and round instead.
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, 4:] = 255
    out = preprocess(image, 32, "fixed").numpy()
    resized = tf.image.resize(image.astype(np.float32), [32, 32], "bicubic", antialias=True).numpy()
    assert resized.min() < 0 and resized.max() > 255  # the overshoot really happens
    np.testing.assert_allclose(out, np.round(np.clip(resized, 0, 255)) / 127.5 - 1.0, atol=1e-6)
    assert out[:, :8].max() < -0.9 and out[:, -8:].min() > 0.9


# ---- image folders: shapes, range, determinism, sharding, corrupt files ---------------------------------


def test_image_folder_pipeline_skips_and_counts_corrupt_files(tmp_path):
    write_colour_images(tmp_path, 6)
    jpeg = tf.io.encode_jpeg(np.full((30, 30, 3), 128, np.uint8)).numpy()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "photo.jpg").write_bytes(jpeg)
    (tmp_path / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "garbage.png").write_bytes(b"this is not an image at all")
    (tmp_path / "notes.txt").write_text("ignored: not an image extension")
    source = DataSource(name="folder", data_dir=str(tmp_path), resolution=16)
    batch = first_batch(source, batch=8)
    assert batch["image"].shape == (8, 16, 16, 3) and batch["image"].dtype == tf.float32
    assert -1.0 <= batch["image"].numpy().min() and batch["image"].numpy().max() <= 1.0
    assert data_stats()["skipped_images"] == 2


def test_image_corrupt_inside_is_skipped_counted_and_logged_once(tmp_path, caplog):
    write_colour_images(tmp_path, 4)
    (tmp_path / "truncated.png").write_bytes((tmp_path / "img_00.png").read_bytes()[:40])
    write_corrupt_png(tmp_path / "corrupt.png")
    source = DataSource(name="folder", data_dir=str(tmp_path), resolution=8)
    with caplog.at_level(logging.WARNING):
        batches = list(source.train_dataset(CONTEXT, 2, seed=3).take(12))  # 6 epochs of 4 good files
        again = list(source.train_dataset(CONTEXT, 2, seed=3).take(12))
    ids = [i for batch in batches for i in colour_ids(batch["image"])]
    assert set(ids) == {0, 1, 2, 3}  # the corrupt file never appears, its place is taken by good ones
    assert data_stats()["skipped_images"] == 2  # truncated (found up front) and corrupt (found while reading)
    for a, b in zip(batches, again):  # still deterministic for a seed
        np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
    logged = [r.getMessage() for r in caplog.records if "corrupt.png" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].startswith(f"skipping {tmp_path / 'corrupt.png'}: cannot be decoded (Invalid PNG data")


def test_eval_over_a_folder_yields_only_the_decodable_images(tmp_path, caplog):
    write_colour_images(tmp_path, 3)
    write_corrupt_png(tmp_path / "img_01_corrupt.png")  # sorted between two good files
    source = DataSource(name="folder", data_dir=str(tmp_path), resolution=8)
    with caplog.at_level(logging.WARNING):
        images = tf.concat([b["image"] for b in source.eval_dataset(2)], 0)
        assert colour_ids(images) == [0, 1, 2] and data_stats()["skipped_images"] == 1
        # A later data set counts the file again, but does not log it again.
        assert colour_ids(next(iter(source.eval_dataset(2, num_examples=3)))["image"]) == [0, 1]
        assert data_stats()["skipped_images"] == 1
    assert sum("img_01_corrupt.png: cannot be decoded" in r.getMessage() for r in caplog.records) == 1


def test_files_skipped_before_training_are_each_named(tmp_path, caplog):
    write_colour_images(tmp_path, 2)
    (tmp_path / "cut.png").write_bytes((tmp_path / "img_00.png").read_bytes()[:40])
    (tmp_path / "text.jpg").write_bytes(b"not a jpeg")
    with caplog.at_level(logging.WARNING):
        DataSource(name="folder", data_dir=str(tmp_path), resolution=8).train_dataset(CONTEXT, 2, seed=0)
    messages = [r.getMessage() for r in caplog.records]
    for name in ("cut.png", "text.jpg"):
        assert f"skipping {tmp_path / name}: not a complete JPEG/PNG file (bad signature or cut-off end)" in messages


def test_a_folder_in_which_nothing_decodes_is_a_one_line_error_not_a_hang(tmp_path):
    # Before, the training pipeline's filter looped forever over the repeated, all-bad files.
    for i in range(3):
        write_corrupt_png(tmp_path / f"bad_{i}.png")
    (tmp_path / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0 no end marker")
    source = DataSource(name="folder", data_dir=str(tmp_path), resolution=8)
    for make in (lambda: source.train_dataset(CONTEXT, 2, seed=0), lambda: source.eval_dataset(2)):
        with pytest.raises(ValueError) as info:
            make()
        assert str(info.value).startswith(
            f"no decodable image in {tmp_path}; 4 files skipped, e.g. {tmp_path / 'bad_0.png'} cannot be decoded "
            "(Invalid PNG data")
        assert "\n" not in str(info.value)


def test_images_too_small_for_the_crop_are_skipped_and_named(tmp_path, caplog):
    # A 1-pixel-wide image has an empty 0.875 crop; before, resizing it killed training at every restart.
    write_colour_images(tmp_path, 3)
    tf.io.write_file(str(tmp_path / "img_01_thin.png"), tf.io.encode_png(np.full((9, 1, 3), 200, np.uint8)))
    source = DataSource(name="folder", data_dir=str(tmp_path), resolution=8, crop="random", crop_proportion=0.875)
    with caplog.at_level(logging.WARNING):
        batches = list(source.train_dataset(CONTEXT, 3, seed=0).take(4))
        evaluation = tf.concat([b["image"] for b in source.eval_dataset(2)], 0)
    assert {i for b in batches for i in colour_ids(b["image"])} == {0, 1, 2}
    assert colour_ids(evaluation) == [0, 1, 2]
    assert data_stats()["skipped_images"] == 1
    assert (f"skipping {tmp_path / 'img_01_thin.png'}: too small (1x9 pixels; the crop needs a shorter side of at "
            "least 2)") in [r.getMessage() for r in caplog.records]
    # "fixed" resizes the whole image: nothing is too small for it.
    fixed = DataSource(name="folder", data_dir=str(tmp_path), resolution=8)
    assert sorted(colour_ids(tf.concat([b["image"] for b in fixed.eval_dataset(4)], 0)))[:3] == [0, 1, 2]
    # A folder of such images alone is an error, as one in which nothing decodes.
    alone = tmp_path / "thin"
    alone.mkdir()
    tf.io.write_file(str(alone / "a.png"), tf.io.encode_png(np.zeros((1, 5, 3), np.uint8)))
    with pytest.raises(ValueError, match=r"no decodable image in .*thin; 1 files skipped, e.g. .*a\.png too small"):
        DataSource(name="folder", data_dir=str(alone), crop="center", crop_proportion=0.875).eval_dataset(2)


def test_folder_iterator_with_a_corrupt_image_checkpoints_and_distributes(tmp_path, two_replicas):
    write_colour_images(tmp_path, 5)
    write_corrupt_png(tmp_path / "corrupt.png")
    source = DataSource(name="folder", data_dir=str(tmp_path), resolution=8)
    dataset = source.train_dataset(CONTEXT, 2, seed=0)
    # The decoder's Python part makes the pipeline stateful; the default policy warns on every save.
    assert dataset.options().experimental_external_state_policy == tf.data.experimental.ExternalStatePolicy.IGNORE
    iterator = iter(dataset)
    for _ in range(4):
        next(iterator)
    checkpoint = tf.train.Checkpoint(data_iterator=iterator)
    path = checkpoint.save(str(tmp_path / "ckpt" / "data"))
    expected = [next(iterator)["image"].numpy() for _ in range(4)]
    checkpoint.restore(path)
    for image in expected:
        np.testing.assert_array_equal(next(iterator)["image"].numpy(), image)
    strategy = two_replicas
    distributed = iter(strategy.distribute_datasets_from_function(lambda context: source.train_dataset(context, 4, 0)))
    for _ in range(4):
        replicas = strategy.experimental_local_results(next(distributed)["image"])
        assert [r.shape for r in replicas] == [(2, 8, 8, 3)] * 2
        assert set(colour_ids(tf.concat(replicas, 0))) <= {0, 1, 2, 3, 4}


@pytest.mark.slow
def test_seeded_pipeline_is_deterministic(tmp_path):
    write_colour_images(tmp_path, 10)
    source = DataSource(name="folder", data_dir=str(tmp_path), resolution=8)
    a, b = first_batch(source, seed=5), first_batch(source, seed=5)
    np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
    orders = {tuple(colour_ids(first_batch(source, batch=8, seed=s)["image"])) for s in range(4)}
    assert len(orders) > 1
    # A resume that could not restore the iterator starts from another, still reproducible, order.
    np.testing.assert_array_equal(first_batch(source, seed=5, start_step=3)["image"].numpy(),
                                  first_batch(source, seed=5, start_step=3)["image"].numpy())


def test_sharding_gives_each_input_pipeline_a_disjoint_part(tmp_path):
    write_colour_images(tmp_path, 8)
    source = DataSource(name="folder", data_dir=str(tmp_path), resolution=8, random_flip=False)
    seen = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline)
        dataset = source.train_dataset(context, 2, seed=0)
        seen.append({i for batch in dataset.take(8) for i in colour_ids(batch["image"])})
    assert seen[0] == {0, 2, 4, 6} and seen[1] == {1, 3, 5, 7}


@pytest.mark.slow
def test_every_source_saves_its_iterator_past_a_whole_pass_and_resumes_exactly(tmp_path):
    # In a child process with a timeout: before, TF's fused shuffle + repeat never returned from the symbolic save
    # once a pass over TFRecord files was complete (the latent sets and FFHQ records; a training run hung for good
    # at its first checkpoint). TFDS (here a tiny builder built offline), folders and random images are covered too.
    child = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data_checkpoint_child.py")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(child)), "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        result = subprocess.run([sys.executable, child, str(tmp_path)], capture_output=True, text=True, timeout=240,
                                env=env)
    except subprocess.TimeoutExpired as e:
        printed = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else e.stdout or ""
        pytest.fail(f"an iterator save hung; the child printed: {printed.split()[-2:]}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line for line in result.stdout.splitlines() if line.startswith("ok ")] == [
        "ok latents", "ok tfds", "ok ffhq", "ok folder", "ok random"]


@pytest.mark.parametrize("contents,message", [
    (None, "does not exist"),
    ({"notes.txt": b"not an image"}, "no .jpg/.jpeg/.png files found below"),
    ({"garbage.png": b"not an image", "cut.jpg": b"\xff\xd8\xff\xe0 no end marker"}, "none of the 2 images below"),
])
def test_image_folder_errors_are_one_line_naming_the_folder_and_the_fix(tmp_path, contents, message):
    root = tmp_path / "images"
    if contents is not None:
        root.mkdir()
        for name, data in contents.items():
            (root / name).write_bytes(data)
    with pytest.raises(ValueError) as info:
        DataSource(name="folder", data_dir=str(root)).train_dataset(CONTEXT, 4, seed=0)
    text = str(info.value)
    assert "\n" not in text and message in text and str(root) in text
    assert "point DataSource.data_dir at a folder of .jpg/.png files" in text


def test_missing_data_are_one_line_errors_saying_where_and_how(tmp_path):
    cases = [
        (DataSource(name="folder", data_dir=str(tmp_path / "nothing")), r"image folder .*nothing does not exist"),
        (DataSource(name="ffhq", data_dir=str(tmp_path), resolution=256),
         r"FFHQ records not found at .*ffhq-r08\.tfrecords; download NVIDIA's ffhq-dataset"),
        (DataSource(name="imagenet2012", data_dir=str(tmp_path), resolution=128),
         r"TFDS data set imagenet2012 is not prepared in .*; download ILSVRC2012_img_train\.tar"),
    ]
    for source, pattern in cases:
        with pytest.raises(ValueError, match=pattern) as info:
            first_batch(source)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="unknown data set 'cifar10'"):
        DataSource(name="cifar10")


# ---- FFHQ TFRecords and TFDS builders -------------------------------------------------------------------


def write_ffhq_records(path, images, corrupt_after=None):
    with tf.io.TFRecordWriter(path) as writer:
        for i, image in enumerate(images):
            chw = np.transpose(image, [2, 0, 1])
            data = chw.tobytes()[:-7] if i == corrupt_after else chw.tobytes()
            features = {"shape": tf.train.Feature(int64_list=tf.train.Int64List(value=chw.shape)),
                        "data": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())


def test_ffhq_records_are_read_as_hwc_in_order_and_bad_records_dropped(tmp_path):
    images = np.random.default_rng(3).integers(0, 256, (5, 16, 16, 3)).astype(np.uint8)
    write_ffhq_records(str(tmp_path / "ffhq-r04.tfrecords"), images, corrupt_after=2)
    source = DataSource(name="ffhq", data_dir=str(tmp_path), resolution=16)
    out = np.concatenate([b["image"].numpy() for b in source.eval_dataset(2)])
    expected = np.delete(images, 2, axis=0) / 127.5 - 1.0  # record 2 is short of bytes
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert first_batch(source)["image"].shape == (4, 16, 16, 3)


@pytest.mark.parametrize("name,resolution", [("imagenet2012", 32), ("celeb_a_hq", 64)])
def test_tfds_builders_with_mock_data(name, resolution):
    with tfds.testing.mock_data(num_examples=6):
        source = DataSource(name=name, resolution=resolution, crop_proportion=0.875 if name == "imagenet2012" else 1.0,
                            with_labels=name == "imagenet2012")
        batch = first_batch(source)
        assert batch["image"].shape == (4, resolution, resolution, 3)
        assert -1.0 <= batch["image"].numpy().min() and batch["image"].numpy().max() <= 1.0
        assert ("label" in batch) == (name == "imagenet2012")
        evaluation = next(iter(source.eval_dataset(3)))
        assert evaluation["image"].shape == (3, resolution, resolution, 3)


# ---- Fashion-MNIST ---------------------------------------------------------------------------------------

debian = pytest.mark.skipif(not os.path.isdir(fashion_mnist.DEBIAN_DIR),
                            reason="Debian package dataset-fashion-mnist is not installed (CI installs it)")


def test_idx_reader_on_files_the_test_writes(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    header = write_idx(tmp_path, images, [3, 7])
    padded, labels = fashion_mnist.load_arrays("train", str(tmp_path))
    assert padded.shape == (2, 32, 32, 1) and list(labels) == [3, 7]
    np.testing.assert_array_equal(padded[:, 2:30, 2:30, 0], images)
    assert not padded[:, :2].any() and not padded[:, :, -2:].any()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(header + images.tobytes()[:-1])
    with pytest.raises(ValueError, match="is truncated"):
        fashion_mnist.load_arrays("train", str(tmp_path))


@debian
def test_fashion_mnist_reader_on_the_debian_files():
    images, labels = fashion_mnist.load_arrays("train")
    assert images.shape == (60000, 32, 32, 1) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [6000] * 10
    test_images, _ = fashion_mnist.load_arrays("test")
    assert test_images.shape == (10000, 32, 32, 1)
    assert images[:, 2:30, 2:30].mean() > 50  # real garments, not zeros


@debian
def test_fashion_mnist_pipeline_gives_rgb_or_gray():
    rgb = first_batch(DataSource(name="fashion_mnist", resolution=32, channels=3))["image"].numpy()
    gray = first_batch(DataSource(name="fashion_mnist", resolution=32, channels=1))["image"].numpy()
    assert rgb.shape == (4, 32, 32, 3) and gray.shape == (4, 32, 32, 1)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    assert rgb[:, :2].max() == -1.0  # the zero padding is black


def test_fashion_mnist_data_dir_is_used_and_must_exist(tmp_path):
    write_idx(tmp_path, np.full((2, 28, 28), 255, np.uint8), [1, 2])
    batch = first_batch(DataSource(name="fashion_mnist", data_dir=str(tmp_path), channels=1), batch=2)
    assert batch["image"].numpy()[:, 2:30, 2:30].min() == 1.0  # the test's white images, not Debian's
    missing = tmp_path / "no-such-folder"
    with pytest.raises(ValueError) as info:
        first_batch(DataSource(name="fashion_mnist", data_dir=str(missing)))
    text = str(info.value)
    assert "\n" not in text and f"Fashion-MNIST folder {missing} does not exist" in text
    assert "IDX files (train-images-idx3-ubyte" in text


def test_fashion_mnist_without_tfds_or_debian_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/tensorflow_datasets
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", str(tmp_path / "no-debian"))
    with pytest.raises(ValueError) as info:
        first_batch(DataSource(name="fashion_mnist"))
    text = str(info.value)
    assert "\n" not in text and str(tmp_path / "no-debian") in text
    assert "`bash tools/setup.sh`" in text and "`apt-get install dataset-fashion-mnist`" in text
