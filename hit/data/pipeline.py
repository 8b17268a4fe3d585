"""Input pipelines (official hit-gan utils/dataset_utils.py): one configured data source, read for training or for
evaluation.

Training, per input pipeline: source -> shard -> shuffle (seeded) -> repeat -> decode, crop, resize, flip
-> per-replica batches (drop_remainder) -> prefetch. Randomness (shuffle, crop, flip) derives from
(seed, start_step), so a seeded pipeline is deterministic, and a run resumed without its iterator state gets a
fresh but reproducible order. Evaluation: the eval split in order, centre crop, no flip, one pass.

The official shuffle buffer is 10 x per-replica batch (80 on a v2-32); ours defaults to 2048 elements, shuffled
while still encoded (files: paths; TFDS: JPEG bytes), and is capped for raw FFHQ records at 1 GiB of images.

An image file that passes image_folder's up-front checks and still fails to decode (corrupt inside) is
dropped, counted in `data_stats()["skipped_images"]` and logged with its name, once per process.
"""

import math
import threading

import gin
from absl import logging
import tensorflow as tf

from hit.core.images import to_uint8
from hit.core.seeds import stateless_seed
from hit.data import fashion_mnist, ffhq_tfrecords, image_folder, latents, tfds_source
from hit.data.preprocessing import preprocess
from hit.data.random_images import random_images

IMAGE_SOURCES = ("random", "fashion_mnist", "folder", "ffhq", "imagenet2012", "celeb_a_hq")
SOURCES = IMAGE_SOURCES + ("latents",)  # latents: tools/extract_latents.py's TFRecords (hit.data.latents)
_STATS = {}  # what the readers counted; folder decoding adds to it while training runs
_UNDECODABLE = set()  # folder images that failed to decode in this process
_LOCK = threading.Lock()  # for both: tf.data decodes on several threads
_NAMED_SKIPS = 100  # files skipped before training are named in the log, up to this many


def data_stats():
    """Current counters of the last data set built, e.g. {"skipped_images": 2}; they can grow as it is read."""
    with _LOCK:
        return dict(_STATS)


def _skip(path, min_side):
    """tf.py_function body, run only for a file that failed to decode or is too small: counts and logs it the
    first time."""
    path = path.numpy().decode()
    with _LOCK:
        first = path not in _UNDECODABLE
        if first:
            _UNDECODABLE.add(path)
            _STATS["skipped_images"] = _STATS.get("skipped_images", 0) + 1
    if first:
        reason = image_folder.decode_error(path, int(min_side)) or "cannot be decoded (failed once, then read)"
        logging.warning("skipping %s: %s", path, reason)
    return False


def _decode_folder_image(element, min_side=1):
    """{"path"} -> {"image", "ok"}; filter on ok. A try/except inside the graph: a one-element data set with
    ignore_errors gives the image, or else the empty fallback; Python runs only for files that fail. An image
    whose shorter side is under `min_side` pixels (its crop would be empty) is skipped the same way."""
    path = element["path"]
    decoded = tf.data.Dataset.from_tensors(path).map(lambda p: (image_folder.decode(tf.io.read_file(p)), True))
    fallback = tf.data.Dataset.from_tensors((tf.zeros([0, 0, 3], tf.uint8), False))
    image, ok = decoded.ignore_errors().concatenate(fallback).take(1).get_single_element()
    ok = tf.logical_and(ok, tf.reduce_min(tf.shape(image)[:2]) >= min_side)
    ok = tf.cond(ok, lambda: ok, lambda: tf.py_function(_skip, [path, min_side], tf.bool))
    ok.set_shape([])
    return {"image": image, "ok": ok}


@gin.configurable(module="hit.data")
class DataSource:
    """Where images come from and how they are prepared; gin-configured once for training and evaluation.

    name: one of SOURCES. resolution / channels: what the models see. data_dir: TFDS data dir, FFHQ record
    folder, image folder, Fashion-MNIST IDX folder or latent data set (whose batches hold "latent", not "image").
    manual_dir: TFDS manual downloads. crop: "random", "center" or "fixed" (None: random for ImageNet training,
    else fixed), crop_proportion: of the shorter side (ImageNet 0.875). with_labels: pass labels through
    (class-conditional tasks).
    """

    def __init__(self, name="random", resolution=32, channels=3, data_dir=None, manual_dir=None, crop=None,
                 crop_proportion=1.0, random_flip=True, shuffle_buffer=2048, with_labels=False):
        if name not in SOURCES:
            raise ValueError(f"unknown data set {name!r}; known: {', '.join(SOURCES)}")
        self.name, self.resolution, self.channels = name, resolution, channels
        self.data_dir, self.manual_dir = data_dir, manual_dir
        self.crop, self.crop_proportion = crop, crop_proportion
        self.random_flip, self.shuffle_buffer, self.with_labels = random_flip, shuffle_buffer, with_labels

    # ---- reading ------------------------------------------------------------------------------------

    def _read(self, split, input_context=None, seed=0, shuffle_files=None):
        """(unbatched dataset of {"image" | "path" | "image_bytes"[, "label"]}, whether already sharded).
        TFDS files are shuffled for training unless shuffle_files says otherwise."""
        name = self.name
        if name == "latents":
            raise ValueError("the latent data set holds no images; it is read by train_dataset / eval_dataset")
        if name == "folder":
            paths, skipped = image_folder.list_checked_images(self.data_dir)
            for path in skipped[:_NAMED_SKIPS]:
                logging.warning("skipping %s: not a complete JPEG/PNG file (bad signature or cut-off end)", path)
            if skipped:
                logging.warning("Skipped %d of %d images below %s that cannot be decoded%s", len(skipped),
                                len(skipped) + len(paths), self.data_dir,
                                f" (the first {_NAMED_SKIPS} named above)" if len(skipped) > _NAMED_SKIPS else "")
            image_folder.check_some_image_usable(paths, self.data_dir, len(skipped), self._min_side(split))
            with _LOCK:  # files found corrupt earlier in this process stay listed: the order must not change
                _STATS["skipped_images"] = len(skipped) + len(_UNDECODABLE.intersection(paths))
            return tf.data.Dataset.from_tensor_slices({"path": paths}), False
        if name == "ffhq":
            return ffhq_tfrecords.ffhq_tfrecords(self.data_dir, self.resolution, split), False
        if name == "fashion_mnist":
            return fashion_mnist.fashion_mnist("train" if split == "train" else "test", self.data_dir), False
        return tfds_source.tfds_source(name, self.resolution, split, self.data_dir, self.manual_dir,
                                       input_context, seed,
                                       shuffle_files=split == "train" if shuffle_files is None else shuffle_files,
                                       with_labels=self.with_labels), input_context is not None

    def _shuffle_buffer(self):
        if self.name == "ffhq":  # raw images: keep the buffer under 1 GiB
            return max(1, min(self.shuffle_buffer, 2**30 // (3 * self.resolution**2)))
        return self.shuffle_buffer

    def _crop_mode(self, training):
        crop = self.crop or ("random" if training and self.name == "imagenet2012" else
                             "center" if self.name == "imagenet2012" else "fixed")
        return "center" if not training and crop == "random" else crop

    def _min_side(self, split):
        """The shorter side (pixels) an image needs for a non-empty crop: a "random" or "center" crop keeps
        int(crop_proportion * shorter side) pixels."""
        if self._crop_mode(split == "train") == "fixed":
            return 1
        return math.ceil(1.0 / self.crop_proportion - 1e-9)

    def _prepare(self, element, training, seed):
        if "image_bytes" in element:
            image = image_folder.decode(element["image_bytes"])
        else:
            image = element["image"]
        crop = self._crop_mode(training)
        out = {"image": preprocess(image, self.resolution, crop, self.crop_proportion,
                                   flip=training and self.random_flip, seed=seed, channels=self.channels)}
        if self.with_labels:
            out["label"] = element["label"]
        return out

    # ---- the two pipelines ---------------------------------------------------------------------------

    def train_dataset(self, input_context, global_batch_size, seed, start_step=0):
        """Per-replica batches {"image": [B, H, W, C] in [-1, 1][, "label"]} for one input pipeline (a latent
        data set: {"latent": [B, h, w, c], ...}, see hit.data.latents).

        Called by `strategy.distribute_datasets_from_function`: replica r of a step receives the pipeline's
        r-th per-replica batch.
        """
        per_replica = input_context.get_per_replica_batch_size(global_batch_size)
        if self.name == "latents":
            dataset = latents.train_dataset(self.data_dir, input_context, seed, start_step, self.shuffle_buffer,
                                            self.with_labels)
        elif self.name == "random":
            dataset = random_images(self.resolution, self.channels, seed, start=start_step * global_batch_size)
            pipelines = input_context.num_input_pipelines
            if pipelines > 1:  # pipeline p: rows [p B/n, (p + 1) B/n) of each global batch, as on one pipeline
                dataset = dataset.batch(global_batch_size // pipelines).shard(
                    pipelines, input_context.input_pipeline_id).unbatch()
        else:
            dataset, sharded = self._read("train", input_context, seed)
            if not sharded:
                dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
            dataset = dataset.shuffle(self._shuffle_buffer(), seed=int(seed) * 1_000_003 + int(start_step),
                                      reshuffle_each_iteration=True).repeat().enumerate()
            if self.name == "folder":
                min_side = self._min_side("train")
                dataset = dataset.map(lambda i, x: (i, _decode_folder_image(x, min_side)),
                                      num_parallel_calls=tf.data.AUTOTUNE)
                dataset = dataset.filter(lambda i, x: x["ok"])
            dataset = dataset.map(lambda i, x: self._prepare(x, True, stateless_seed("data", seed, start_step, i)),
                                  num_parallel_calls=tf.data.AUTOTUNE)
        dataset = dataset.batch(per_replica, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
        options = tf.data.Options()
        # Symbolic checkpoints store the readers' positions instead of prefetched batches; the shuffle buffer's
        # elements are still saved (TF 2.20): a latent set's checkpoint holds up to its 1 GiB buffer cap, 68 MB
        # for 2048 elements of 32x32x8 moments. Folders use full iterator checkpoints (the shuffle buffer holds
        # only paths); their decoder's state (files already logged) belongs to the process.
        options.experimental_symbolic_checkpoint = self.name != "folder"
        # tf.data fuses shuffle + repeat into one op whose symbolic save never returns once a pass over TFRecord
        # files is complete (TF 2.20: the latent sets and FFHQ records hung a run at its first checkpoint;
        # tests/test_data.py saves every source past a pass). Unfused, a pass ends before the next begins: the
        # same elements, no mixing across the boundary, the same input rate (measured).
        options.experimental_optimization.shuffle_and_repeat_fusion = False
        if self.name == "folder":
            options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
        return dataset.with_options(options)

    def eval_dataset(self, batch_size, num_examples=None):
        """The eval split once, in order: batches {"image"[, "label"]}; the last batch may be smaller. A latent
        data set yields the posterior means of all its latents (it has one split)."""
        if self.name == "latents":
            return latents.eval_dataset(self.data_dir, batch_size, num_examples, self.with_labels)
        if self.name == "random":
            dataset = random_images(self.resolution, self.channels, seed=1).take(num_examples or 1000)
        else:
            dataset, _ = self._read("eval")
            if self.name == "folder":
                min_side = self._min_side("eval")
                dataset = dataset.map(lambda x: _decode_folder_image(x, min_side), num_parallel_calls=tf.data.AUTOTUNE)
                dataset = dataset.filter(lambda x: x["ok"])
            if num_examples:
                dataset = dataset.take(num_examples)
            dataset = dataset.map(lambda x: self._prepare(x, False, None), num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


    def _ordered(self, split):
        if self.name == "random":
            return random_images(self.resolution, self.channels, seed=0).map(lambda x: {"image": to_uint8(x["image"])})
        return self._read("train" if split == "train" else "eval", shuffle_files=False)[0]

    def num_images(self, split="train"):
        """How many elements ordered_images(split) enumerates, or None when unknown without reading (FFHQ
        records) or endless (random)."""
        if self.name == "random":  # 2^62 elements
            return None
        count = int(self._ordered(split).cardinality())
        return count if count >= 0 else None

    def ordered_images(self, split="train", keep=None, limit=None):
        """The split's images once, in a fixed order, as stored (no shuffle, crop or resize): {"index": position
        in the split, "image": uint8 (H, W, C), "label": int64, -1 without labels}; only the first `limit`
        positions if given. `keep(index) -> bool` selects elements before they are decoded; undecodable folder
        images are dropped as in training."""
        dataset = self._ordered(split)
        if limit is not None:
            dataset = dataset.take(limit)
        dataset = dataset.enumerate()
        if keep is not None:
            dataset = dataset.filter(lambda i, x: keep(i))

        def decode(index, element):
            if "path" in element:
                out = _decode_folder_image(element)
            else:
                image = element.get("image")
                out = {"image": image_folder.decode(element["image_bytes"]) if image is None else image,
                       "ok": tf.constant(True)}
            label = element["label"] if "label" in element else tf.constant(-1, tf.int64)
            return {"index": index, "image": out["image"], "label": tf.cast(label, tf.int64), "ok": out["ok"]}

        dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE).filter(lambda x: x["ok"])
        return dataset.map(lambda x: {k: v for k, v in x.items() if k != "ok"})


def make_train_dataset(input_context, global_batch_size, seed, start_step=0):
    """The trainer's default input function: the gin-configured DataSource's training pipeline."""
    return DataSource().train_dataset(input_context, global_batch_size, seed, start_step)


def first_eval_images(num):
    """The trainer's default real_images_fn: the first `num` images of the gin-configured DataSource's eval split."""
    return next(iter(DataSource().eval_dataset(num, num)))["image"]
