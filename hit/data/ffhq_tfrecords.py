"""FFHQ from NVIDIA's multi-resolution TFRecords (`ffhq-r{log2(res):02d}.tfrecords`; official hit-gan
utils/datasets.py `FFHQ`).

Each record holds a raw uint8 CHW `data` feature and its `shape`. The official runs train on the first 70k
records and evaluate on the first 50k. Records whose byte count does not match their shape are dropped.
"""

import math
import os

import tensorflow as tf

NUM_TRAIN, NUM_EVAL = 70_000, 50_000


def record_path(data_dir, resolution):
    return os.path.join(data_dir, f"ffhq-r{int(math.log2(resolution)):02d}.tfrecords")


def _parse(record):
    features = tf.io.parse_single_example(record, {"shape": tf.io.FixedLenFeature([3], tf.int64),
                                                   "data": tf.io.FixedLenFeature([], tf.string)})
    data = tf.io.decode_raw(features["data"], tf.uint8)
    complete = tf.equal(tf.size(data, out_type=tf.int64), tf.reduce_prod(features["shape"]))
    image = tf.cond(complete, lambda: tf.reshape(data, features["shape"]),
                    lambda: tf.zeros(tf.cast(features["shape"], tf.int32), tf.uint8))
    return {"image": tf.transpose(image, [1, 2, 0]), "complete": complete}  # CHW -> HWC


def ffhq_tfrecords(data_dir, resolution, split="train"):
    """{"image": uint8 (res, res, 3)} from the record file for `resolution` in data_dir."""
    path = record_path(data_dir or "", resolution)
    if not tf.io.gfile.exists(path):
        raise ValueError(f"FFHQ records not found at {path}; download NVIDIA's ffhq-dataset TFRecords "
                         f"({os.path.basename(path)}) into DataSource.data_dir, or use name='folder'")
    count = NUM_TRAIN if split == "train" else NUM_EVAL
    dataset = tf.data.TFRecordDataset(path).take(count).map(_parse).filter(lambda x: x["complete"])
    return dataset.map(lambda x: {"image": tf.ensure_shape(x["image"], [resolution, resolution, 3])})
