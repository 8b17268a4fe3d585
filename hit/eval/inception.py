"""Feature extractors for FID / IS, all loaded from local files (nothing is downloaded).

Two Inception protocols (official hit-gan utils/inception_utils.py; TF-GAN's eval/inception_metrics.py):
  "keras_inception"  the paper's: keras.applications.InceptionV3 with the Keras ImageNet weights file
                     (inception_v3_weights_tf_dim_ordering_tf_kernels.h5), bilinear resize to 299 without
                     antialiasing, [-1, 1] input; `avg_pool` (2048) for FID, the 1000 logits for IS. This is what
                     the official code reports, but it is not the standard FID network.
  "tfgan_inception"  the standard one: the 2015-12-05 Inception graph's pool_3 / logits as used by TF-GAN and
                     TTUR, from a local SavedModel (or TF-Hub-format) directory whose signature returns "pool_3"
                     and "logits" for [-1, 1] 299x299 images. Only these numbers compare with other papers.
and "demo_classifier", the Fashion-MNIST demo's own classifier (hit.eval.classifier_distance).

Every extractor maps [-1, 1] images to (features [B, D], logits [B, K]).
"""

import os

import keras
import tensorflow as tf

PROTOCOLS = ("keras_inception", "tfgan_inception", "demo_classifier")
INCEPTION_SIZE = 299


def _resize(images):
    images = tf.convert_to_tensor(images, tf.float32)
    if images.shape[-1] == 1:
        images = tf.tile(images, [1, 1, 1, 3])
    return tf.image.resize(images, [INCEPTION_SIZE, INCEPTION_SIZE], method="bilinear", antialias=False)


def _require(path, what, how):
    if not path or not tf.io.gfile.exists(path):
        raise ValueError(f"{what} not found at {path!r}; {how}")


class KerasInception:
    """Protocol 1: Keras InceptionV3 from a local weights file."""

    def __init__(self, weights_path):
        _require(weights_path, "InceptionV3 weights", "pass the Keras ImageNet weights file "
                 "(inception_v3_weights_tf_dim_ordering_tf_kernels.h5) as Evaluator.weights_path")
        base = keras.applications.InceptionV3(include_top=True, weights=None, classifier_activation=None)
        base.load_weights(weights_path)
        self.model = keras.Model(base.input, [base.get_layer("avg_pool").output, base.output])
        self._call = tf.function(lambda x: self.model(_resize(x), training=False))

    def features_and_logits(self, images):
        features, logits = self._call(images)
        return features, logits


class SavedModelInception:
    """Protocol 2: a SavedModel / TF-Hub directory whose signature gives "pool_3" and "logits"."""

    def __init__(self, path):
        _require(path, "Inception SavedModel", "pass a local directory holding the TF-GAN/TTUR Inception "
                 "(outputs pool_3 and logits) as Evaluator.weights_path")
        self.loaded = tf.saved_model.load(path)
        signatures = getattr(self.loaded, "signatures", {})
        name = next((n for n in ("serving_default", "default") if n in signatures), None)
        if name is None:
            raise ValueError(f"{path} has no serving_default or default signature")
        self.signature = signatures[name]
        (self.input_name,) = self.signature.structured_input_signature[1].keys()
        outputs = self.signature.structured_outputs
        self.pool_key = next((k for k in outputs if "pool_3" in k), None)
        self.logits_key = next((k for k in outputs if "logits" in k), None)
        if self.pool_key is None or self.logits_key is None:
            raise ValueError(f"{path}: the signature must return pool_3 and logits, it returns {sorted(outputs)}")

    def features_and_logits(self, images):
        outputs = self.signature(**{self.input_name: _resize(images)})
        features = tf.reshape(outputs[self.pool_key], [tf.shape(images)[0], -1])
        return features, outputs[self.logits_key]


def make_feature_extractor(protocol, weights_path):
    """The extractor of a protocol (see the module docstring), from its local weights."""
    if protocol == "keras_inception":
        return KerasInception(weights_path)
    if protocol == "tfgan_inception":
        return SavedModelInception(weights_path)
    if protocol == "demo_classifier":
        from hit.eval.classifier_distance import DemoClassifier

        return DemoClassifier.load(weights_path)
    raise ValueError(f"unknown evaluation protocol {protocol!r}; expected one of {PROTOCOLS}")


def weights_name(path):
    """A short tag for cache file names."""
    return os.path.basename(os.path.normpath(path)).split(".")[0] if path else "none"
