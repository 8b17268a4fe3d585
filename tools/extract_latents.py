"""Images -> a latent data set for GAT (GAT facts 3, 5.5): SD-VAE posterior moments, labels and, optionally, DINOv2
features of every image (and of its mirror image), in sharded TFRecords (format: hit/data/latents.py).

    python tools/extract_latents.py --source=imagenet2012 --data_dir=~/tensorflow_datasets \\
        --vae_weights=sd-vae-ft-mse/diffusion_pytorch_model.safetensors \\
        --dinov2_weights=dinov2-base/model.safetensors --flipped --output_dir=latents/imagenet256

Images come from any data source of hit.data (imagenet2012, celeb_a_hq, ffhq, folder, fashion_mnist, random) in
the split's own order, are cut to --resolution with ADM's centre crop (--crop=adm, GAT's recipe; --crop=center
is our pipelines' crop), encoded in batches under a tf.distribute strategy (--strategy=tpu / mirrored; the
global batch is split across replicas in order), and written in shards of --shard_size source positions.

Resumable: a shard is written to <name>.incomplete and renamed when complete, so a second run skips finished
shards and redoes a half-written one; latents.json records the settings and a resumed run must use the same.
--num_tasks / --task_index split the shards between processes (shard k belongs to task k mod num_tasks).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

import hit  # noqa: E402,F401  (before TensorFlow: it sets TensorFlow's environment, see hit/__init__.py)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from hit.console import keep_project_lines  # noqa: E402
from hit.data import latents  # noqa: E402
from hit.data.pipeline import IMAGE_SOURCES, DataSource  # noqa: E402
from hit.data.preprocessing import adm_center_crop, preprocess  # noqa: E402
from hit.errors import one_line  # noqa: E402
from hit.images import to_uint8  # noqa: E402
from hit.models.dinov2 import load_dinov2  # noqa: E402
from hit.models.sd_vae import SCALE_FACTOR, load_sd_vae  # noqa: E402
from hit.progress import Progress  # noqa: E402
from hit.train.strategy import STRATEGIES, make_strategy  # noqa: E402

CROPS = ("adm", "center")
LABELLED = ("imagenet2012", "fashion_mnist")  # sources whose images carry class labels

_SOURCE = flags.DEFINE_enum("source", None, IMAGE_SOURCES, "Where the images come from (hit.data sources).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "The source's data_dir (TFDS dir, image folder, FFHQ records).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "TFDS manual downloads (ImageNet tars), if not prepared.")
_SPLIT = flags.DEFINE_enum("split", "train", ("train", "eval"), "Which split of the source.")
_RESOLUTION = flags.DEFINE_integer("resolution", 256, "Image side fed to the VAE (latents are 1/8 of it).")
_CROP = flags.DEFINE_enum("crop", "adm", CROPS, "adm: ADM's centre crop (GAT); center: our pipelines' crop.")
_VAE = flags.DEFINE_string("vae_weights", None, "SD-VAE .safetensors (ldm or diffusers naming), e.g. sd-vae-ft-mse.")
_VAE_CONFIG = flags.DEFINE_string("vae_config", "{}", "JSON of SDVAE options for a VAE other than SD's.")
_DINOV2 = flags.DEFINE_string("dinov2_weights", None, "DINOv2 ViT-B/14 .safetensors (Hugging Face naming): also "
                              "store its class and patch features (REPA targets).")
_DINOV2_CONFIG = flags.DEFINE_string("dinov2_config", "{}", "JSON of DINOv2 options for another ViT.")
_FLIPPED = flags.DEFINE_bool("flipped", False, "Also store the moments and features of the mirrored image.")
_FEATURE_DTYPE = flags.DEFINE_enum("feature_dtype", "float16", latents.FEATURE_DTYPES,
                                   "Storage dtype of the DINOv2 features (about 0.4 MB per image in float16).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where latents.json and the shards go.")
_SHARD_SIZE = flags.DEFINE_integer("shard_size", 1024, "Source images per shard.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per step, all replicas together.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", None, "Only the first N images of the split (random: required).")
_STRATEGY = flags.DEFINE_enum("strategy", "default", STRATEGIES, "tpu, mirrored (GPUs) or default (one device).")
_TPU = flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy=tpu ('local' on a TPU VM).")
_TASK_INDEX = flags.DEFINE_integer("task_index", 0, "This process's index when --num_tasks processes share shards.")
_NUM_TASKS = flags.DEFINE_integer("num_tasks", 1, "Processes sharing the shards (shard k: task k mod num_tasks).")


def crop_images(dataset, crop, resolution):
    """{"image": uint8 (H, W, C)} -> uint8 (resolution, resolution, 3): the crop, then gray -> RGB."""
    def prepare(element):
        image = element["image"]
        if crop == "adm":
            image = tf.numpy_function(lambda x: adm_center_crop(x, resolution), [image], tf.uint8, stateful=False)
        else:
            image = to_uint8(preprocess(image, resolution, "center"))
        image = tf.ensure_shape(image, [resolution, resolution, None])
        image = tf.cond(tf.shape(image)[-1] == 1, lambda: tf.tile(image, [1, 1, 3]), lambda: image)
        return {**element, "image": tf.ensure_shape(image, [resolution, resolution, 3])}

    return dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)


class Encoder:
    """uint8 images [batch_size, R, R, 3] (numpy) -> {field: numpy [batch_size, ...]} under a strategy: the batch
    is split across replicas in order and gathered back in order."""

    def __init__(self, vae, dinov2=None, flipped=False, strategy=None, batch_size=64):
        self.vae, self.dinov2, self.flipped = vae, dinov2, flipped
        self.strategy = strategy or tf.distribute.get_strategy()
        replicas = self.strategy.num_replicas_in_sync
        if batch_size % replicas:
            raise ValueError(f"--batch_size {batch_size} is not divisible by the {replicas} replicas")
        self.batch_size, self.per_replica = batch_size, batch_size // replicas
        self._step = tf.function(self._distributed)

    def _replica(self, images):
        out = {}
        for suffix, view in [("", images)] + [("_flip", tf.reverse(images, axis=[2]))] * self.flipped:
            mean, std = self.vae.encode(tf.cast(view, tf.float32) / 127.5 - 1.0)  # EDM2 / REPA: x / 127.5 - 1
            out["moments" + suffix] = tf.concat([mean, std], axis=-1)
            if self.dinov2 is not None:
                out["dino_cls" + suffix], out["dino_patches" + suffix] = self.dinov2.features(view)
        return out

    def _distributed(self, images):
        out = self.strategy.run(self._replica, args=(images,))
        return {name: self.strategy.gather(value, axis=0) for name, value in out.items()}

    def __call__(self, images):
        if images.shape[0] != self.batch_size:
            raise ValueError(f"expected a batch of {self.batch_size} images, got {images.shape[0]}")
        n = self.per_replica
        values = self.strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(images[context.replica_id_in_sync_group * n:][:n]))
        return {name: value.numpy() for name, value in self._step(values).items()}


def check_metadata(output_dir, metadata):
    """Write latents.json, or check that an existing one was made with the same settings (data_dir may move)."""
    if not tf.io.gfile.exists(os.path.join(output_dir, latents.METADATA)):
        latents.write_metadata(output_dir, metadata)
        return
    existing = latents.read_metadata(output_dir)
    differ = sorted(k for k in set(existing) | set(metadata) if k != "data_dir" and existing.get(k) != metadata.get(k))
    if differ:
        raise ValueError(f"{output_dir} holds latents made with other settings ({', '.join(differ)}: "
                         f"{[existing.get(k) for k in differ]} there, {[metadata.get(k) for k in differ]} now); "
                         "resume with the same settings or choose another --output_dir")


def extract(source, output_dir, encoder, *, split="train", resolution=256, crop="adm", shard_size=1024,
            num_images=None, feature_dtype="float16", task_index=0, num_tasks=1, weights=None):
    """Write (or finish) the latent data set of `source`'s split in output_dir; returns a one-line summary.
    encoder: an Encoder (its models decide the fields); weights: names of the weight files, for latents.json."""
    if shard_size < 1 or num_tasks < 1 or not 0 <= task_index < num_tasks:
        raise ValueError(f"need shard_size >= 1 and 0 <= task_index < num_tasks, got {shard_size}, {task_index}, "
                         f"{num_tasks}")
    if crop not in CROPS:
        raise ValueError(f"unknown crop {crop!r}; expected one of {CROPS}")
    vae, dinov2 = encoder.vae, encoder.dinov2
    factor = 2 ** (len(vae.channel_multipliers) - 1)
    if resolution % factor:
        raise ValueError(f"resolution {resolution} is not divisible by the VAE's downsampling factor {factor}")
    total = source.num_images(split)
    if num_images is not None:
        total = num_images if total is None else min(total, num_images)
    if total is None:
        raise ValueError(f"the {source.name} source is endless; give --num_images")
    fields = latents.field_specs([resolution // factor] * 2 + [vae.latent_channels], True,
                                 dinov2 and (dinov2.width, dinov2.grid ** 2), encoder.flipped, feature_dtype)
    check_metadata(output_dir, {
        "format_version": latents.FORMAT_VERSION, "source": source.name, "data_dir": source.data_dir,
        "split": split, "crop": crop, "resolution": resolution, "shard_size": shard_size, "num_images": total,
        "labels": source.with_labels, "fields": fields, "scale_factor": SCALE_FACTOR, "weights": weights or {}})

    num_shards = -(-total // shard_size)
    mine = [k for k in range(num_shards) if k % num_tasks == task_index]
    todo = [k for k in mine if not tf.io.gfile.exists(latents.shard_path(output_dir, k))]
    for k in todo:  # left by an interrupted run: redone from the start
        if tf.io.gfile.exists(latents.shard_path(output_dir, k) + latents.INCOMPLETE):
            logging.info("redoing the half-written shard %d", k)
            tf.io.gfile.remove(latents.shard_path(output_dir, k) + latents.INCOMPLETE)
    count = sum(min(shard_size, total - k * shard_size) for k in todo)
    logging.info("%d of %d shards to write (%d images), %d done", len(todo), len(mine), count, len(mine) - len(todo))
    if not todo:
        return f"all {num_shards} shards of {output_dir} are complete ({total} images)"

    wanted = tf.constant(np.isin(np.arange(num_shards), todo))
    dataset = source.ordered_images(split, keep=lambda i: wanted[i // shard_size], limit=total)
    batches = crop_images(dataset, crop, resolution).batch(encoder.batch_size).prefetch(2)
    progress = Progress("extracting latents", count)
    writer, shard, written = None, None, 0
    for batch in batches.as_numpy_iterator():
        n = len(batch["index"])
        images = np.zeros((encoder.batch_size, *batch["image"].shape[1:]), np.uint8)  # static shape: pad
        images[:n] = batch["image"]
        out = encoder(images)
        out["label"] = batch["label"]
        for j in range(n):
            if batch["index"][j] // shard_size != shard:
                finish(writer, output_dir, shard)
                shard = int(batch["index"][j] // shard_size)
                writer = tf.io.TFRecordWriter(latents.shard_path(output_dir, shard) + latents.INCOMPLETE)
            writer.write(latents.serialize(fields, {name: value[j] for name, value in out.items()}))
        written += n
        progress.update(n)
    finish(writer, output_dir, shard)
    progress.done()
    return (f"wrote {written} images in {len(todo)} shards to {output_dir} "
            f"(the set: {total} images in {num_shards} shards)")


def finish(writer, output_dir, shard):
    """Close a shard's writer and give the file its final name (so that only complete shards have one)."""
    if writer is not None:
        writer.close()
        path = latents.shard_path(output_dir, shard)
        tf.io.gfile.rename(path + latents.INCOMPLETE, path, overwrite=True)


def json_flag(flag):
    try:
        value = json.loads(flag.value)
    except json.JSONDecodeError as e:
        raise ValueError(f"--{flag.name} is not valid JSON: {e.msg}") from None
    if not isinstance(value, dict):
        raise ValueError(f"--{flag.name} must be a JSON object of options, got {flag.value}")
    return value


def main(argv):
    keep_project_lines()
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    missing = [f"--{f.name}" for f in (_SOURCE, _VAE, _OUTPUT_DIR) if not f.value]
    if missing:
        sys.exit(f"error: {', '.join(missing)} required")
    try:
        strategy = make_strategy(_STRATEGY.value, tpu=_TPU.value)
        with strategy.scope():
            vae = load_sd_vae(_VAE.value, _RESOLUTION.value, **json_flag(_VAE_CONFIG))
            dinov2 = _DINOV2.value and load_dinov2(_DINOV2.value, **json_flag(_DINOV2_CONFIG))
        source = DataSource(_SOURCE.value, resolution=_RESOLUTION.value, data_dir=_DATA_DIR.value,
                            manual_dir=_MANUAL_DIR.value, with_labels=_SOURCE.value in LABELLED)
        encoder = Encoder(vae, dinov2 or None, _FLIPPED.value, strategy, _BATCH_SIZE.value)
        weights = {"vae": os.path.basename(_VAE.value), "dinov2": _DINOV2.value and os.path.basename(_DINOV2.value)}
        print(extract(source, _OUTPUT_DIR.value, encoder, split=_SPLIT.value, resolution=_RESOLUTION.value,
                      crop=_CROP.value, shard_size=_SHARD_SIZE.value, num_images=_NUM_IMAGES.value,
                      feature_dtype=_FEATURE_DTYPE.value, task_index=_TASK_INDEX.value, num_tasks=_NUM_TASKS.value,
                      weights=weights))
    except (ValueError, OSError, tf.errors.OpError) as e:
        sys.exit(f"error: {one_line(e)}")


if __name__ == "__main__":
    app.run(main)
