"""Writing latent data sets (REPA's preprocessing, which official GAT's README prescribes): images of any hit.data
source -> SD-VAE moments (+ DINOv2 features) in resumable TFRecord shards, in the format of hit.data.latents.
tools/extract_latents.py is its command line.

Images are read in the split's own order (DataSource.ordered_images), cut to the resolution with ADM's centre crop
("adm", GAT's recipe) or our pipelines' ("center"), made RGB (gray tiled; a one-channel VAE, the Fashion-MNIST
demo's, gets their luma: BT.601 weights, which give a tiled gray image its gray back), encoded in batches under a
tf.distribute strategy (the global batch split across replicas in order and gathered back in order; the last batch
padded for static shapes) and written in shards of `shard_size` source positions. A shard is written to
<name>.incomplete and renamed when complete, after its sidecar (its record count and size, which readers check) is
written, so a second run skips finished shards and redoes a half-written one; latents.json records the settings
(the VAE's scale factor too) and a resumed run must use the same. Shard k belongs to task k mod num_tasks
(several hosts share a set).
"""

import os

from absl import logging
import numpy as np
import tensorflow as tf

from hit.core.images import to_uint8
from hit.core.progress import Progress
from hit.data import latents
from hit.data.preprocessing import adm_center_crop, preprocess

CROPS = ("adm", "center")
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as tf.image.rgb_to_grayscale; they sum to 1


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
    is split across replicas in order and gathered back in order. A one-channel VAE encodes the images' luma."""

    def __init__(self, vae, dinov2=None, flipped=False, strategy=None, batch_size=64):
        if vae.image_channels not in (1, 3):
            raise ValueError(f"the VAE takes {vae.image_channels}-channel images; extraction feeds 1 (gray) or 3 (RGB)")
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
            pixels = tf.cast(view, tf.float32)
            if self.vae.image_channels == 1:
                pixels = tf.tensordot(pixels, tf.constant(LUMA), axes=[[3], [0]])[..., None]
            mean, std = self.vae.encode(pixels / 127.5 - 1.0)  # EDM2 / REPA: x / 127.5 - 1
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
    factor = vae.downsampling_factor
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
        "labels": source.with_labels, "fields": fields, "scale_factor": vae.scale_factor, "weights": weights or {}})

    num_shards = -(-total // shard_size)
    mine = [k for k in range(num_shards) if k % num_tasks == task_index]
    todo = [k for k in mine if not tf.io.gfile.exists(latents.shard_path(output_dir, k))]
    for k in todo:  # left by an interrupted run: redone from the start
        if tf.io.gfile.exists(latents.shard_path(output_dir, k) + latents.INCOMPLETE):
            logging.info("redoing the half-written shard %d", k)
            tf.io.gfile.remove(latents.shard_path(output_dir, k) + latents.INCOMPLETE)
    for k in mine:
        if k not in todo and not tf.io.gfile.exists(latents.shard_path(output_dir, k) + latents.SIDECAR):
            add_sidecar(latents.shard_path(output_dir, k))
    count = sum(min(shard_size, total - k * shard_size) for k in todo)
    logging.info("%d of %d shards to write (%d images), %d done", len(todo), len(mine), count, len(mine) - len(todo))
    if not todo:
        return f"all {num_shards} shards of {output_dir} are complete ({total} images)"

    wanted = tf.constant(np.isin(np.arange(num_shards), todo))
    dataset = source.ordered_images(split, keep=lambda i: wanted[i // shard_size], limit=total)
    batches = crop_images(dataset, crop, resolution).batch(encoder.batch_size).prefetch(2)
    progress = Progress("extracting latents", count)
    writer, shard, records, written, unstarted = None, None, 0, 0, set(todo)
    for batch in batches.as_numpy_iterator():
        n = len(batch["index"])
        images = np.zeros((encoder.batch_size, *batch["image"].shape[1:]), np.uint8)  # static shape: pad
        images[:n] = batch["image"]
        out = encoder(images)
        out["label"] = batch["label"]
        for j in range(n):
            if batch["index"][j] // shard_size != shard:
                finish(writer, output_dir, shard, records)
                shard, records = int(batch["index"][j] // shard_size), 0
                writer = start(output_dir, shard)
                unstarted.discard(shard)
            writer.write(latents.serialize(fields, {name: value[j] for name, value in out.items()}))
            records += 1
        written += n
        progress.update(n)
    finish(writer, output_dir, shard, records)
    for k in sorted(unstarted):  # every image of the shard was undecodable: an empty shard, so the set is whole
        finish(start(output_dir, k), output_dir, k, 0)
    progress.done()
    return (f"wrote {written} images in {len(todo)} shards to {output_dir} "
            f"(the set: {total} images in {num_shards} shards)")


def add_sidecar(path):
    """The sidecar of a complete shard written before sidecars, from one pass over its records; a one-line error
    naming the shard if a record is damaged."""
    try:
        records = sum(1 for _ in tf.data.TFRecordDataset(path))
    except tf.errors.DataLossError as e:
        raise ValueError(f"shard {path} is damaged ({e.message.splitlines()[0][:200]}); {latents.REDO}") from None
    latents.write_json(path + latents.SIDECAR, {"records": records, "bytes": tf.io.gfile.stat(path).length})
    logging.info("added the sidecar of %s (%d records)", path, records)


def start(output_dir, shard):
    return tf.io.TFRecordWriter(latents.shard_path(output_dir, shard) + latents.INCOMPLETE)


def finish(writer, output_dir, shard, records):
    """Close a shard's writer, write its sidecar, then give the file its final name (so that only complete shards
    have one, and each has its sidecar)."""
    if writer is not None:
        writer.close()
        path = latents.shard_path(output_dir, shard)
        size = tf.io.gfile.stat(path + latents.INCOMPLETE).length
        latents.write_json(path + latents.SIDECAR, {"records": records, "bytes": size})
        tf.io.gfile.rename(path + latents.INCOMPLETE, path, overwrite=True)
