"""One process of tests/test_data.py's checkpoint test: every training source, read past a whole pass (so that
the shuffle buffer has emptied and `repeat` has started the next pass), saves its input iterator as the trainer
does (symbolic where the pipeline allows it) and resumes it exactly. A pipeline whose save never returns (TF's
fused shuffle + repeat over TFRecord files did) hangs this process; the test's timeout turns that into a failure
naming the source printed last.

    python tests/data_checkpoint_child.py WORK_DIR [SOURCE ...]   (default: every source)
"""

import os
import sys

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from hit.data import latents, tfds_source
from hit.data.pipeline import DataSource

BATCH, STEPS = 4, 8  # 32 elements: past a whole pass of every set below (at most 24 elements, one pipeline each)


class HitTinyImages(tfds.core.GeneratorBasedBuilder):
    """A TFDS data set built here, offline: TFDS's own record files, read through its interleaved reader."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)), "label": tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(20), "validation": self._generate_examples(4)}

    def _generate_examples(self, count):
        for i in range(count):
            yield i, {"image": np.full((20, 24, 3), 10 * i, np.uint8), "label": i % 3}


def latent_set(directory):
    os.makedirs(directory)
    fields = latents.field_specs([2, 2, 4])
    for shard in range(3):
        with tf.io.TFRecordWriter(latents.shard_path(directory, shard)) as writer:
            for i in range(8):
                writer.write(latents.serialize(fields, {"moments": np.full([2, 2, 8], 8 * shard + i, np.float32),
                                                        "label": i % 3}))
    latents.write_metadata(directory, {"format_version": latents.FORMAT_VERSION, "fields": fields, "labels": True,
                                       "num_images": 24, "shard_size": 8})
    return directory


def ffhq_records(directory):
    os.makedirs(directory)
    with tf.io.TFRecordWriter(os.path.join(directory, "ffhq-r04.tfrecords")) as writer:
        for i in range(12):
            data = np.full([3, 16, 16], 10 * i, np.uint8)
            features = {"shape": tf.train.Feature(int64_list=tf.train.Int64List(value=data.shape)),
                        "data": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data.tobytes()]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
    return directory


def image_folder(directory):
    os.makedirs(directory)
    for i in range(10):
        tf.io.write_file(os.path.join(directory, f"{i:02d}.png"), tf.io.encode_png(np.full((12, 12, 3), i, np.uint8)))
    return directory


def sources(work):
    tfds.disable_progress_bar()
    builder = HitTinyImages(data_dir=os.path.join(work, "tfds"))
    builder.download_and_prepare()
    # DataSource reads the paper's TFDS sets by name; this tiny builder stands in for imagenet2012.
    tfds_source.builder_name = lambda name, resolution: builder.name
    return {
        "latents": DataSource("latents", data_dir=latent_set(os.path.join(work, "latents")), with_labels=True),
        "tfds": DataSource("imagenet2012", resolution=16, data_dir=builder.data_dir_root, with_labels=True),
        "ffhq": DataSource("ffhq", resolution=16, data_dir=ffhq_records(os.path.join(work, "ffhq"))),
        "folder": DataSource("folder", resolution=8, data_dir=image_folder(os.path.join(work, "folder"))),
        "random": DataSource("random", resolution=8),
    }


def main(work, names):
    strategy = tf.distribute.get_strategy()
    for name, source in sources(work).items():
        if names and name not in names:
            continue
        def make():
            return iter(strategy.distribute_datasets_from_function(
                lambda context: source.train_dataset(context, BATCH, seed=0)))

        iterator = make()
        for _ in range(STEPS):
            next(iterator)
        print(f"saving {name}", flush=True)
        path = tf.train.Checkpoint(data_iterator=iterator).write(os.path.join(work, "ckpt", name))
        expected = [tf.nest.map_structure(np.asarray, next(iterator)) for _ in range(3)]
        restored = make()
        tf.train.Checkpoint(data_iterator=restored).read(path).assert_consumed()
        for batch in expected:
            tf.nest.map_structure(np.testing.assert_array_equal, tf.nest.map_structure(np.asarray, next(restored)),
                                  batch)
        print(f"ok {name}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
