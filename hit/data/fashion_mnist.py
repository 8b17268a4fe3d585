"""Fashion-MNIST (MIT licence) for the offline demo: TFDS when prepared, else Debian's dataset-fashion-mnist.

Debian ships the full set as IDX files under /usr/share/datasets/fashion-mnist (`apt-get install
dataset-fashion-mnist`). Their .gz bytes differ from upstream, so TFDS's checksums reject them; we read the IDX
format directly. The 28x28 images are zero-padded to 32x32 (2 pixels each side).
"""

import gzip
import os

import numpy as np
import tensorflow as tf

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_INSTALL = "run `bash tools/setup.sh` (or `apt-get install dataset-fashion-mnist`)"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def read_idx(path):
    """An IDX file (optionally .gz) -> numpy array. Format: 0, 0, dtype code 0x08 (uint8), rank, sizes, data."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    rank = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(rank))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * rank)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: {body.size} bytes for shape {shape}")
    return body.reshape(shape)


def _find(directory, stem):
    for name in (stem, stem + ".gz"):
        if os.path.exists(os.path.join(directory, name)):
            return os.path.join(directory, name)
    raise ValueError(f"Fashion-MNIST file {stem}[.gz] not found in {directory}; {_INSTALL} or set "
                     "DataSource.data_dir to the folder holding the IDX files")


def load_arrays(split="train", directory=DEBIAN_DIR):
    """(images uint8 [N, 32, 32, 1], labels int64 [N]) from IDX files, padded from 28x28 to 32x32."""
    if split not in _FILES:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; expected one of {sorted(_FILES)}")
    images = read_idx(_find(directory, _FILES[split][0]))
    labels = read_idx(_find(directory, _FILES[split][1])).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels in {directory}")
    return np.pad(images, ((0, 0), (2, 2), (2, 2)))[..., None], labels


def fashion_mnist(split="train", data_dir=None):
    """{"image": uint8 (32, 32, 1), "label": int64}: from TFDS if it is prepared in data_dir (default
    ~/tensorflow_datasets), else from the IDX files in data_dir (default Debian's folder)."""
    if data_dir and not tf.io.gfile.isdir(data_dir):
        raise ValueError(f"Fashion-MNIST folder {data_dir} does not exist; set DataSource.data_dir to a TFDS data "
                         "dir holding fashion_mnist or to a folder of the IDX files (train-images-idx3-ubyte[.gz], "
                         "...), or leave it unset to use Debian's dataset-fashion-mnist")
    tfds_dir = data_dir or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
    if tf.io.gfile.isdir(os.path.join(tfds_dir, "fashion_mnist")):
        import tensorflow_datasets as tfds

        builder = tfds.builder("fashion_mnist", data_dir=tfds_dir)
        if builder.is_prepared():
            dataset = builder.as_dataset(split=split, shuffle_files=False)
            return dataset.map(lambda x: {"image": tf.pad(x["image"], [[2, 2], [2, 2], [0, 0]]), "label": x["label"]})
    if not data_dir and not os.path.isdir(DEBIAN_DIR):
        raise ValueError(f"Fashion-MNIST not found: neither TFDS's fashion_mnist in {tfds_dir} nor {DEBIAN_DIR}; "
                         f"{_INSTALL}")
    images, labels = load_arrays(split, data_dir or DEBIAN_DIR)
    return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
