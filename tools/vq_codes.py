"""A VQ-HiT run's code indices: images -> codes (.npy) and codes -> images (PNGs).

    python tools/vq_codes.py --model_dir=runs/vqhit_demo --images=photos/ --output=codes.npy
    python tools/vq_codes.py --model_dir=runs/vqhit_demo --data_source --num_images=256 --output=codes.npy
    python tools/vq_codes.py --model_dir=runs/vqhit_demo --codes=codes.npy --output=decoded/

Images -> codes: --images (a folder, read recursively in sorted order, or one file) or --data_source (the eval
split of the DataSource the run's config.gin configures, at the model's resolution). Files are decoded and
prepared as the data pipeline prepares evaluation images (a centre square crop of the shorter side, bicubic
resize, hit.data.preprocessing). --output gets int32 codes [N, g, g] and, beside it, <output>.files.txt: one
line per code grid naming its source (the file below --images, or <source>:eval:<index>). An image that cannot
be decoded is an error naming the file: the indices of codes.npy must match the images asked for.
Codes -> images: --codes, an integer .npy [N, g, g] with values in [0, K), becomes --output/000000.png, ...,
clip(decode(codes), -1, 1) as uint8. The model is the run's latest checkpoint (or --checkpoint).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

import hit  # noqa: E402,F401  (before TensorFlow: it sets TensorFlow's environment, see hit/__init__.py)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from hit.core.console import keep_project_lines  # noqa: E402
from hit.core.errors import one_line  # noqa: E402
from hit.data import image_folder  # noqa: E402
from hit.data.preprocessing import preprocess  # noqa: E402
from hit.inference import runs, sampling  # noqa: E402

BATCH_SIZE = 64  # images or code grids per model call

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A VQ-HiT training run: config.gin and checkpoints.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A checkpoint prefix (default: the latest in --model_dir).")
_IMAGES = flags.DEFINE_string("images", None, "Images -> codes: a folder of .jpg/.jpeg/.png files, or one file.")
_DATA_SOURCE = flags.DEFINE_bool("data_source", False, "Images -> codes: the run's DataSource's eval split.")
_NUM = flags.DEFINE_integer("num_images", None, "Images -> codes: at most this many (default: all).")
_CODES = flags.DEFINE_string("codes", None, "Codes -> images: an integer .npy of shape [N, g, g].")
_OUTPUT = flags.DEFINE_string("output", None, "A .npy file (images -> codes) or a folder (codes -> images).")


def image_paths(root):
    """(paths, names): the file itself, or the images below the folder, named relative to it."""
    if not tf.io.gfile.exists(root):
        raise ValueError(f"--images {root} does not exist")
    if not tf.io.gfile.isdir(root):
        return [root], [os.path.basename(root)]
    try:
        paths = image_folder.list_images(root)
    except ValueError:
        raise ValueError(f"no .jpg/.jpeg/.png files found below {root}") from None
    return paths, [os.path.relpath(p, root) for p in paths]


def read_image(path, model):
    """The file as the model's input: float32 [R, R, C] in [-1, 1], prepared as evaluation images are."""
    try:
        image = image_folder.decode(tf.io.read_file(path))
    except tf.errors.OpError:
        raise ValueError(f"{path} {image_folder.decode_error(path)}") from None
    return preprocess(image, model.resolution, crop="center", channels=model.image_channels)


def image_batches(model):
    """(names, batches of [-1, 1] images [<= BATCH_SIZE, R, R, C]) of --images or --data_source."""
    if _IMAGES.value:
        paths, names = image_paths(_IMAGES.value)
        paths, names = paths[:_NUM.value], names[:_NUM.value]
        batches = (tf.stack([read_image(p, model) for p in paths[i:i + BATCH_SIZE]])
                   for i in range(0, len(paths), BATCH_SIZE))
        return names, batches
    source = runs.run_data_source(_MODEL_DIR.value or os.path.dirname(_CHECKPOINT.value),
                                      resolution=model.resolution, channels=model.image_channels)
    batches = [batch["image"] for batch in source.eval_dataset(BATCH_SIZE, _NUM.value)]
    count = sum(len(b) for b in batches)
    return [f"{source.name}:eval:{i:06d}" for i in range(count)], batches


def images_to_codes(model, output):
    if not output.endswith(".npy"):
        raise ValueError(f"--output must be a .npy file for images -> codes, got {output}")
    names, batches = image_batches(model)
    codes = [model.encode(batch).numpy() for batch in batches]
    if not codes:
        raise ValueError("no images to encode")
    codes = np.concatenate(codes).astype(np.int32)
    if os.path.dirname(output):
        tf.io.gfile.makedirs(os.path.dirname(output))
    np.save(output, codes)
    listing = output[:-len(".npy")] + ".files.txt"
    with open(listing, "w") as f:
        f.writelines(name + "\n" for name in names)
    return f"wrote codes {list(codes.shape)} to {output} and their sources to {listing}"


def read_codes(path, model):
    """int32 codes [N, g, g] from a .npy, checked against the model: one-line errors."""
    try:
        codes = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read --codes {path}: {one_line(e)}") from None
    g, k = model.grid_size, model.num_codes
    if codes.ndim != 3 or codes.shape[1:] != (g, g):
        raise ValueError(f"{path} holds codes of shape {list(codes.shape)}; this run's model decodes [N, {g}, {g}]")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"{path} holds {codes.dtype} values; codes are integers")
    if not len(codes):
        raise ValueError(f"{path} holds no code grids")
    if codes.min() < 0 or codes.max() >= k:
        raise ValueError(f"codes must be in [0, {k}), got values in [{codes.min()}, {codes.max()}] in {path}")
    return codes.astype(np.int32)


def codes_to_images(model, output):
    codes = read_codes(_CODES.value, model)
    for start in range(0, len(codes), BATCH_SIZE):
        images = tf.clip_by_value(model.decode(codes[start:start + BATCH_SIZE]), -1.0, 1.0)
        sampling.write_individual_pngs(images, output, start)
    return f"wrote {len(codes)} PNGs of {model.resolution}x{model.resolution} to {output}"


def main(argv):
    keep_project_lines()
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    if not (_MODEL_DIR.value or _CHECKPOINT.value):
        sys.exit("error: one of --model_dir / --checkpoint is required")
    if sum(map(bool, (_IMAGES.value, _DATA_SOURCE.value, _CODES.value))) != 1:
        sys.exit("error: give exactly one of --images, --data_source (images -> codes) and --codes (codes -> images)")
    if not _OUTPUT.value:
        sys.exit("error: --output is required (a .npy file for images -> codes, a folder for codes -> images)")
    if _NUM.value is not None and (_NUM.value < 1 or _CODES.value):
        sys.exit("error: --num_images must be positive, and is for images -> codes only")
    try:
        model = runs.load_autoencoder(_MODEL_DIR.value, _CHECKPOINT.value)
        convert = codes_to_images if _CODES.value else images_to_codes
        print(convert(model, _OUTPUT.value))
    except ValueError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    app.run(main)
