"""SavedModel export of a generator, or a VQ-HiT autoencoder, for TF Serving (the official code has none).

<export_dir>/<version>/ (the layout TF Serving watches) is written by Keras 3's ExportArchive: a plain
tf.saved_model.save of a tf.Module restores Keras 3 variables under names TF1-style loaders (TF Serving's C++
loader, `saved_model_cli run`) cannot find ("Could not find variable hit_generator/kernel_22"); ExportArchive's
output loads in both, and with tf.saved_model.load needs no Keras. Signatures (batch size dynamic):
    serving_default  z     float32 [batch, latent_dim] -> images uint8   [batch, H, W, C] (clipped, rounded)
    generate         seed  int64   [batch]             -> images uint8   (the z of each seed, hit.core.seeds)
    generate_float   z     float32 [batch, latent_dim] -> images float32 in [-1, 1]
A class-conditional generator (GAT) adds `label` int32 [batch] to every signature (`_inputs` is the one place that
knows it), samples without truncation, and returns images decoded through its VAE (the SD-VAE's decoder is in
the SavedModel; a pixel-space run's decoding is the identity).
The signatures declare z's width, so `saved_model_cli show` lists it and Python callers of a loaded signature
get TensorFlow's own rejection naming the expected shape (None, latent_dim); runners that feed tensors without
checking them against the signature (TF Serving's C++ session) meet a check inside the graph instead, "z must
have shape [batch, latent_dim]" ("seed must have shape [batch]", "label must have shape [batch]"). The graph also
checks values: "z must be finite (no NaN or Inf)" (else black images) and "label must be a class in [0, K)" (an
embedding wraps -1 to class K - 1). A wrong dtype is rejected against the signature everywhere.

A VQ-HiT autoencoder (hit.models.vq_hit.VQHiT, resolution R, C channels, a g x g grid of K codes) exports instead:
    serving_default, reconstruct  images uint8 [batch, R, R, C] -> images uint8 [batch, R, R, C], codes int32
    encode                        images uint8 [batch, R, R, C] -> codes  int32 [batch, g, g]
    decode                        codes  int32 [batch, g, g]    -> images uint8 [batch, R, R, C]
Images enter as x / 127.5 - 1 and leave as to_uint8(clip(decode(codes), -1, 1)); reconstruct is decode(encode),
so it equals the other two. Inside the graph: "images must have shape [batch, R, R, C]", "codes must have shape
[batch, g, g]" and, from the model's decode, "codes must be in [0, K)".
"""

import os

import keras
import tensorflow as tf

from hit.core.images import to_uint8
from hit.core.seeds import seed_latents

SIGNATURES = ("serving_default", "generate", "generate_float")
AUTOENCODER_SIGNATURES = ("serving_default", "reconstruct", "encode", "decode")


class GeneratorSignatures:
    """The three endpoints of a generator, each returning {"images": ...}."""

    def __init__(self, generator, conditional=False):
        self.generator = generator
        self.latent_dim = generator.latent_dim
        self.conditional = conditional

    def _inputs(self, first):
        """The signature's inputs: `first` ("z" or "seed") and, for a conditional model, "label"."""
        specs = {"z": tf.TensorSpec([None, self.latent_dim], tf.float32, name="z"),
                 "seed": tf.TensorSpec([None], tf.int64, name="seed")}
        inputs = [specs[first]]
        if self.conditional:
            inputs.append(tf.TensorSpec([None], tf.int32, name="label"))
        return inputs

    @staticmethod
    def _rank_is(x, rank, message):
        """x, checked to have `rank` when the graph runs (see fed_rank)."""
        with tf.control_dependencies([tf.debugging.assert_equal(fed_rank(x), rank, message=message)]):
            return tf.identity(x)

    def _images(self, z, label=None):
        """clip(G(z), -1, 1), z (and label) checked when the graph runs: for runners that do not check feeds
        against the signature, the first failure is then one of these messages, not an error inside G."""
        message = f"z must have shape [batch, {self.latent_dim}]"
        z = self._rank_is(z, 2, message)
        width = tf.debugging.assert_equal(tf.shape(z)[-1], self.latent_dim, message=message)
        with tf.control_dependencies([width]):
            # NaN or Inf would give black (or NaN) images silently
            z = tf.debugging.check_numerics(tf.ensure_shape(tf.identity(z), [None, self.latent_dim]),
                                            "z must be finite (no NaN or Inf)")
        if label is not None:
            # an embedding lookup wraps -1 to the last class, and labels >= K give zeros on GPU
            k, shape = self.generator.num_classes, "label must have shape [batch]"
            label, in_range = self._rank_is(label, 1, shape), f"label must be a class in [0, {k})"
            checks = [tf.debugging.assert_equal(tf.shape(label)[0], tf.shape(z)[0], message=shape),
                      tf.debugging.assert_non_negative(label, message=in_range),
                      tf.debugging.assert_less(label, k, message=in_range)]
            with tf.control_dependencies(checks):
                label = tf.identity(label)
            return tf.clip_by_value(self.generator(z, label, training=False), -1.0, 1.0)
        return tf.clip_by_value(self.generator(z, training=False), -1.0, 1.0)

    def endpoints(self):
        """name -> (function, input signature), serving_default first."""
        def serve(z, *label):
            return {"images": to_uint8(self._images(z, *label))}

        def generate(seed, *label):
            seed = self._rank_is(seed, 1, "seed must have shape [batch]")  # else a cryptic error inside map_fn
            return {"images": to_uint8(self._images(seed_latents(seed, self.latent_dim), *label))}

        def generate_float(z, *label):
            return {"images": self._images(z, *label)}

        return {"serving_default": (serve, self._inputs("z")), "generate": (generate, self._inputs("seed")),
                "generate_float": (generate_float, self._inputs("z"))}


def fed_rank(x):
    """The rank of the tensor actually fed as x. tf.rank, assert_rank and grappler's constant folding take the
    signature's static rank and would check nothing; the index of a -1 appended to x's shape (every dim is >= 0)
    is the rank when the graph runs."""
    return tf.argmin(tf.concat([tf.shape(x), [-1]], 0), output_type=tf.int32)


def capturing_named(function, variables):
    """`function`, which first captures each variable's handle as a graph input named variable_<i>.

    A traced function takes the handles of the variables it reads as hidden inputs ("captures"), which
    TensorFlow names after a process-wide counter ("10754"). Input names must match [a-z][a-z0-9_]*, so
    tf.saved_model.save renames them (unknown, unknown_0, ...) and logs every renaming, one ~2 KB line per
    signature. Captured first under valid names, nothing is renamed. Pass the result to add_endpoint as is: a
    tf.function around it would capture the same handles again under counter names.
    """
    def call(*args):
        graph = tf.compat.v1.get_default_graph()
        for i, variable in enumerate(variables):
            graph.capture(variable.handle, name=f"variable_{i}")
        return function(*args)
    return call


def _write(models, endpoints, export_dir, version):
    """Write the endpoints (name -> (function, input signature)) over `models` (a Keras model, or a list of the
    models they run) to <export_dir>/<version>/ atomically (a temporary directory, then a rename)."""
    models = models if isinstance(models, (list, tuple)) else [models]
    if int(version) < 0:
        raise ValueError(f"the export version must be a non-negative integer, got {version}")
    target = os.path.join(export_dir, str(int(version)))
    if tf.io.gfile.exists(target):
        raise ValueError(f"{target} already exists; choose another --version (TF Serving serves the highest)")
    archive = keras.export.ExportArchive()
    for model in models:
        archive.track(model)
    variables = [v for model in models for v in model.variables]
    for name, (function, inputs) in endpoints.items():
        archive.add_endpoint(name, capturing_named(function, variables), input_signature=inputs)
    temporary = os.path.join(export_dir, f".tmp-{int(version)}")  # TF Serving ignores non-numeric names
    if tf.io.gfile.exists(temporary):
        tf.io.gfile.rmtree(temporary)
    archive.write_out(temporary, verbose=False)
    tf.io.gfile.rename(temporary, target)
    return target


def export_generator(generator, export_dir, version, conditional=None):
    """Write the generator's SavedModel to <export_dir>/<version>/ atomically; returns that directory. A GAT
    generator (hit.models.samples.Decoded) is class-conditional and exports its decoding too: the Keras generator and,
    when it has one, the SD-VAE whose decoder turns latents into the images the signatures return."""
    if conditional is None:
        conditional = getattr(generator, "num_classes", None) is not None
    models = [getattr(generator, "model", generator)]
    if getattr(generator, "decoder_model", None) is not None:
        models.append(generator.decoder_model)
    return _write(models, GeneratorSignatures(generator, conditional).endpoints(), export_dir, version)


class AutoencoderSignatures:
    """The endpoints of a VQ-HiT autoencoder (hit.models.vq_hit.VQHiT): AUTOENCODER_SIGNATURES in the module
    docstring."""

    def __init__(self, model):
        self.model = model
        r, c, g = model.resolution, model.image_channels, model.grid_size
        self.image_shape, self.code_shape = [r, r, c], [g, g]
        self.images_spec = tf.TensorSpec([None, r, r, c], tf.uint8, name="images")
        self.codes_spec = tf.TensorSpec([None, g, g], tf.int32, name="codes")

    @staticmethod
    def _checked(x, shape, message):
        """x with shape [batch, *shape], checked when the graph runs (feeds unchecked against the signature). One
        condition, whatever x's rank: padded to len(shape), dims of another rank cannot fail to compare first."""
        dims = tf.concat([tf.shape(x)[1:], tf.zeros([len(shape)], tf.int32)], 0)[:len(shape)]
        ok = tf.logical_and(tf.equal(fed_rank(x), len(shape) + 1), tf.reduce_all(tf.equal(dims, shape)))
        with tf.control_dependencies([tf.debugging.Assert(ok, [message])]):
            return tf.ensure_shape(tf.identity(x), [None, *shape])

    def _codes(self, images):
        message = f"images must have shape [batch, {', '.join(map(str, self.image_shape))}]"
        images = self._checked(images, self.image_shape, message)
        return self.model.encode(tf.cast(images, tf.float32) / 127.5 - 1.0)

    def _images(self, codes):
        """uint8 clip(decode(codes)); decode checks the values: "codes must be in [0, K)" when the graph runs."""
        message = f"codes must have shape [batch, {', '.join(map(str, self.code_shape))}]"
        codes = self._checked(codes, self.code_shape, message)
        return to_uint8(tf.clip_by_value(self.model.decode(codes), -1.0, 1.0))

    def endpoints(self):
        """name -> (function, input signature), serving_default first."""
        def reconstruct(images):
            codes = self._codes(images)
            return {"images": self._images(codes), "codes": codes}

        images = [self.images_spec]
        return {"serving_default": (reconstruct, images), "reconstruct": (reconstruct, images),
                "encode": (lambda images: {"codes": self._codes(images)}, images),
                "decode": (lambda codes: {"images": self._images(codes)}, [self.codes_spec])}


def export_autoencoder(model, export_dir, version):
    """Write a VQ-HiT autoencoder's SavedModel to <export_dir>/<version>/ atomically; returns that directory."""
    return _write(model, AutoencoderSignatures(model).endpoints(), export_dir, version)
