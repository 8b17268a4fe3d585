"""Latent data sets (REPA's preprocessing, which official GAT's README prescribes): SD-VAE posterior moments per
image, in sharded TFRecords.

tools/extract_latents.py writes them; this module owns the format and reads it for training.

    <data_dir>/latents.json           how the set was made: shapes and dtypes of every field, the source, the VAE
    <data_dir>/latents-00000.tfrecord  shard k holds source images [k * shard_size, (k + 1) * shard_size), in order
    <data_dir>/latents-00000.tfrecord.json  the complete shard's {"records": n, "bytes": b}, checked when reading
    <data_dir>/latents-00001.tfrecord.incomplete   a shard being written (renamed when complete)

Each record: "moments" [h, w, 2c] float32 = [mean; std] on channels (EDM2 / REPA's layout), "label" int64 (-1
when the source has none), and optionally "dino_cls" [768], "dino_patches" [256, 768] (DINOv2 ViT-B/14 features
of the image, float16 by default) and the same fields of the horizontally flipped image ("moments_flip",
"dino_cls_flip", "dino_patches_flip").

Reading for training samples a posterior latent per element and step, z = (mean + std * eps) * scale_factor with
eps keyed by (seed, start step, element), as GAT does every step (official train.py `sample_posterior`);
scale_factor is the one latents.json records, the VAE's (SD's 0.18215, or e.g. the Fashion-MNIST demo VAE's own).

Opening a set checks it cheaply (a stat and a sidecar per shard, no records read): every shard of latents.json's
num_images is there with the size and record count its sidecar recorded (shards written before sidecars: present,
their sizes unchecked). A shard damaged otherwise fails while read, with TensorFlow's DataLossError.
"""

from concurrent import futures
import json
import os

from absl import logging
import numpy as np
import tensorflow as tf

from hit.core.seeds import stateless_seed
from hit.models.latent_space import SCALE_FACTOR, check_scale_factor, sample_latents

METADATA = "latents.json"
SHARD = "latents-{:05d}.tfrecord"
INCOMPLETE = ".incomplete"
SIDECAR = ".json"  # <shard>.json: not matched by shard_files' glob
FORMAT_VERSION = 1
FEATURE_DTYPES = ("float16", "bfloat16", "float32")
_HOW_TO = "write one with tools/extract_latents.py"
REDO = "re-extract it: delete it and run tools/extract_latents.py again"


def shard_path(data_dir, index):
    return os.path.join(data_dir, SHARD.format(index))


def field_specs(latent_shape, labels=True, dino_shape=None, flipped=False, feature_dtype="float16"):
    """{field: {"shape", "dtype"}} of a record. latent_shape: [h, w, c] of the latent (moments have 2c);
    dino_shape: (width, tokens) of the DINOv2 features, None without them."""
    if feature_dtype not in FEATURE_DTYPES:
        raise ValueError(f"unknown feature dtype {feature_dtype!r}; expected one of {FEATURE_DTYPES}")
    h, w, c = latent_shape
    fields = {"moments": {"shape": [h, w, 2 * c], "dtype": "float32"}}
    if dino_shape:
        width, tokens = dino_shape
        fields["dino_cls"] = {"shape": [width], "dtype": feature_dtype}
        fields["dino_patches"] = {"shape": [tokens, width], "dtype": feature_dtype}
    if flipped:
        fields.update({f"{name}_flip": dict(spec) for name, spec in list(fields.items())})
    fields["label"] = {"shape": [], "dtype": "int64"}
    return fields


def write_json(path, value):
    """Write a JSON file atomically (a temporary file renamed over it)."""
    with tf.io.gfile.GFile(path + INCOMPLETE, "w") as f:
        f.write(json.dumps(value, indent=1, sort_keys=True) + "\n")
    tf.io.gfile.rename(path + INCOMPLETE, path, overwrite=True)


def write_metadata(data_dir, metadata):
    """Write latents.json atomically."""
    tf.io.gfile.makedirs(data_dir)
    write_json(os.path.join(data_dir, METADATA), metadata)


def read_metadata(data_dir):
    """The set's latents.json as a dict; one-line errors when the folder or the file is missing or wrong."""
    path = os.path.join(data_dir or "", METADATA)
    if not data_dir or not tf.io.gfile.exists(path):
        raise ValueError(f"no latent data set in {data_dir!r} (missing {METADATA}); {_HOW_TO}")
    try:
        with tf.io.gfile.GFile(path) as f:
            metadata = json.loads(f.read())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg}, line {e.lineno}); {_HOW_TO}") from None
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format version {metadata.get('format_version')}, this code reads "
                         f"{FORMAT_VERSION}; {_HOW_TO}")
    return metadata


def shard_files(data_dir):
    """Sorted paths of the complete shards."""
    files = sorted(tf.io.gfile.glob(os.path.join(data_dir, SHARD.replace("{:05d}", "*"))))
    if not files:
        raise ValueError(f"no complete shards ({SHARD.format(0)}, ...) in {data_dir}; {_HOW_TO}")
    return files


def serialize(fields, values):
    """One record (bytes) from {field: numpy value}, each cast to its field's dtype and checked for shape."""
    feature = {}
    for name, spec in fields.items():
        value = np.asarray(values[name])
        if list(value.shape) != spec["shape"]:
            raise ValueError(f"field {name} has shape {list(value.shape)}, expected {spec['shape']}")
        if spec["dtype"] == "int64":
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=value.reshape(-1)))
        else:
            raw = tf.cast(value, spec["dtype"]).numpy().tobytes()  # little-endian on every TPU / GPU host
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[raw]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse(record, fields):
    """A serialized record -> {field: tensor}, arrays as float32 of their field's shape, "label" int64."""
    spec = {name: tf.io.FixedLenFeature([], tf.int64 if s["dtype"] == "int64" else tf.string)
            for name, s in fields.items()}
    example = tf.io.parse_single_example(record, spec)
    out = {}
    for name, s in fields.items():
        if s["dtype"] == "int64":
            out[name] = example[name]
        else:
            value = tf.io.decode_raw(example[name], tf.as_dtype(s["dtype"]), little_endian=True)
            out[name] = tf.reshape(tf.cast(value, tf.float32), s["shape"])
    return out


def posterior(moments):
    """[h, w, 2c] moments -> (mean, std), each [h, w, c]."""
    mean, std = tf.split(moments, 2, axis=-1)
    return mean, std


def scale_factor(metadata, data_dir=""):
    """The latent scale factor latents.json records (the VAE's); SD's 0.18215 for a set that records none."""
    return check_scale_factor(metadata.get("scale_factor", SCALE_FACTOR),
                              f"scale_factor in {os.path.join(data_dir or '', METADATA)}")


def sample(element, seed, with_labels=True, scale=SCALE_FACTOR):
    """A parsed record -> {"latent": (mean + std * eps) * scale[, "latent_flip"], "label", DINOv2 fields}, scale:
    the set's scale factor. The flipped image's latent uses an independent eps (seed folded with 1)."""
    out = {}
    for name, value in element.items():
        if name.startswith("moments"):
            key = seed if name == "moments" else tf.random.experimental.stateless_fold_in(
                tf.cast(seed, tf.int64), tf.constant(1, tf.int64), alg="philox")
            out[name.replace("moments", "latent")] = sample_latents(*posterior(value), key, scale)
        elif name != "label" or with_labels:
            out[name] = value
    return out


def record_bytes(fields):
    """Approximate serialized size of one record."""
    return sum(int(np.prod(s["shape"])) * tf.as_dtype(s["dtype"]).size for s in fields.values())


def train_dataset(data_dir, input_context, seed, start_step=0, shuffle_buffer=2048, with_labels=True):
    """Endless elements {"latent": [h, w, c], "label"?, DINOv2 fields?} for one input pipeline.

    Shards are split between input pipelines (whole files when there are at least as many files, else
    records); files are visited in a seeded order, read in turn, and shuffled in a buffer of at most 1 GiB."""
    fields, files, scale = _open(data_dir, with_labels)
    pipelines, index = input_context.num_input_pipelines, input_context.input_pipeline_id
    by_file = len(files) >= pipelines
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if by_file:
        dataset = dataset.shard(pipelines, index)
    order_seed = int(seed) * 1_000_003 + int(start_step)
    dataset = dataset.shuffle(len(files), seed=order_seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(8, len(files)), block_length=1)
    if not by_file:
        dataset = dataset.shard(pipelines, index)
    buffer = max(1, min(shuffle_buffer, 2**30 // record_bytes(fields)))
    dataset = dataset.shuffle(buffer, seed=order_seed + 1, reshuffle_each_iteration=True).repeat().enumerate()
    return dataset.map(lambda i, r: sample(parse(r, fields), stateless_seed("data", seed, start_step, i),
                                           with_labels, scale), num_parallel_calls=tf.data.AUTOTUNE)


def eval_dataset(data_dir, batch_size, num_examples=None, with_labels=True):
    """The set once, in source order: batches {"latent": posterior mean * the set's scale factor, "label"?, DINOv2
    fields?}."""
    fields, files, scale = _open(data_dir, with_labels)
    dataset = tf.data.TFRecordDataset(files)
    if num_examples:
        dataset = dataset.take(num_examples)

    def mean_latent(record):
        element = parse(record, fields)
        out = {k.replace("moments", "latent"): posterior(v)[0] * scale if k.startswith("moments") else v
               for k, v in element.items()}
        if not with_labels:
            out.pop("label")
        return out

    return dataset.map(mean_latent, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _open(data_dir, with_labels):
    """(fields, shard paths, scale factor) of a set about to be read, after the checks of _check_shards."""
    metadata = read_metadata(data_dir)
    if with_labels and not metadata.get("labels", False):
        raise ValueError(f"the latent data set in {data_dir} has no labels (its source {metadata.get('source')} "
                         "had none); set DataSource.with_labels = False or extract from a labelled source")
    files = shard_files(data_dir)
    _check_shards(data_dir, metadata, [os.path.basename(f) for f in files])
    return metadata["fields"], files, scale_factor(metadata, data_dir)


def _check_shards(data_dir, metadata, names):
    """One-line errors unless the shards are those of latents.json's num_images, each of its sidecar's size and
    record count. A stat and a small read per shard, in parallel (each is a round trip on remote storage)."""
    total, size = metadata["num_images"], metadata["shard_size"]
    expected = [SHARD.format(k) for k in range(-(-total // size))]
    described = f"{METADATA}: {total} images in {len(expected)} shards"
    missing, extra = sorted(set(expected) - set(names)), sorted(set(names) - set(expected))
    if missing:
        raise ValueError(f"latent data set {data_dir} lacks shard {missing[0]} ({described}, {len(missing)} "
                         "missing); finish it with tools/extract_latents.py")
    if extra:
        raise ValueError(f"latent data set {data_dir} holds {extra[0]}, not one of its shards ({described}); "
                         "remove it or extract the set again")

    def stat(name):
        path = os.path.join(data_dir, name)
        try:
            with tf.io.gfile.GFile(path + SIDECAR) as f:
                sidecar = json.loads(f.read())
        except tf.errors.NotFoundError:
            sidecar = None
        return path, sidecar, tf.io.gfile.stat(path).length

    with futures.ThreadPoolExecutor(min(32, len(expected))) as pool:
        shards = list(pool.map(stat, expected))
    records = 0
    for k, (path, sidecar, length) in enumerate(shards):
        if sidecar is None:
            continue
        if length != sidecar["bytes"]:
            raise ValueError(f"shard {path} is damaged: {length} bytes, its sidecar says {sidecar['bytes']}; {REDO}")
        # A folder's undecodable images are dropped while extracting: its shards may hold fewer records.
        images = min(size, total - k * size)
        if sidecar["records"] > images or (sidecar["records"] < images and metadata.get("source") != "folder"):
            raise ValueError(f"shard {path} holds {sidecar['records']} records, {images} images by {METADATA}; "
                             f"{REDO}")
        records += sidecar["records"]
    unchecked = sum(sidecar is None for _, sidecar, _ in shards)
    if unchecked:
        logging.warning("%d of the %d shards in %s have no sidecar (%s, written before sidecars): their sizes "
                        "cannot be checked; tools/extract_latents.py with the set's settings adds them",
                        unchecked, len(shards), data_dir, SHARD.format(0) + SIDECAR)
    elif records < total:
        logging.info("%s holds %d of its %d images (the others could not be decoded when extracted)", data_dir,
                     records, total)
