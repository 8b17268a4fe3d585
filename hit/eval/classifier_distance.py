"""The Fashion-MNIST demo's quality numbers without Inception weights: a small CNN classifier stands in.

A CNN trained on Fashion-MNIST (`python tools/train_demo_classifier.py --output=PATH`, a few minutes on a
CPU) maps [-1, 1] images [B, 32, 32, C] to 10 logits. Its 128-d penultimate features ("features" layer) give a
Fréchet distance between real and generated images, the "Fréchet classifier distance"; its logits give the
Inception-Score formula with this classifier, the "classifier score". Both compare runs scored with the same
classifier weights only: they are not FID or IS and cannot be set beside published numbers.

Weights are saved as `NAME.weights.h5` plus a JSON sidecar `NAME.weights.h5.json` (channels, resolution and
how the weights were trained), so loading rebuilds the network without any training code.
"""

import json
import os

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from hit.data import fashion_mnist

NUM_CLASSES = 10
FEATURE_DIM = 128
_SUFFIX = ".weights.h5"


def build_demo_classifier(channels=3, resolution=32):
    """conv32-conv32-pool-conv64-conv64-pool-dense128 ("features")-dense10, ReLU: [-1, 1] images -> logits.

    Initialised from Keras's global seed, so deterministic after `keras.utils.set_random_seed`.
    """
    if channels not in (1, 3):
        raise ValueError(f"the demo classifier takes 1 or 3 channels, got {channels}")
    if resolution % 4:
        raise ValueError(f"the demo classifier's resolution must be a multiple of 4, got {resolution}")
    images = keras.Input((resolution, resolution, channels), name="images")
    x = images
    for i, width in enumerate((32, 32, 64, 64)):
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        if i % 2:
            x = keras.layers.MaxPooling2D(name=f"pool{i // 2}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    features = keras.layers.Dense(FEATURE_DIM, activation="relu", name="features")(x)
    logits = keras.layers.Dense(NUM_CLASSES, name="logits")(features)
    return keras.Model(images, logits, name="demo_classifier")


def to_classifier_inputs(images, channels):
    """Fashion-MNIST uint8 [B, H, W, 1] -> float32 in [-1, 1] with `channels` channels (gray tiled to 3)."""
    images = tf.cast(images, tf.float32) / 127.5 - 1.0
    return tf.tile(images, [1, 1, 1, channels]) if channels > 1 else images


class DemoClassifier:
    """A demo classifier network (`model`, freshly initialised) with its input format; features, logits, save, load.

    info: facts about the weights (steps, seed, test accuracy) that `save` writes to the sidecar.
    """

    def __init__(self, channels=3, resolution=32, info=None):
        self.model = build_demo_classifier(channels, resolution)
        self.channels, self.resolution = channels, resolution
        self.info = dict(info or {})
        self._both = keras.Model(self.model.inputs, [self.model.get_layer("features").output, self.model.outputs[0]])
        spec = tf.TensorSpec([None, resolution, resolution, None], tf.float32)
        self._forward = tf.function(self._features_and_logits, input_signature=[spec])  # traced once

    def features_and_logits(self, images):
        """[-1, 1] images [B, H, W, 1 or 3] -> (features [B, 128] float32, logits [B, 10] float32), inference mode.

        Runs one tf.function (usable eagerly or inside another). Gray images are tiled to 3 channels, or RGB
        averaged to gray, to match the classifier.
        """
        images = tf.cast(images, tf.float32)
        expected = [None, self.resolution, self.resolution, None]
        if not images.shape.is_compatible_with(expected) or images.shape[-1] not in (None, 1, 3):
            raise ValueError(f"the demo classifier takes [batch, {self.resolution}, {self.resolution}, 1 or 3] "
                             f"images, got shape {images.shape}")
        return self._forward(images)

    def _features_and_logits(self, images):
        if self.channels == 3:  # gray is tiled, RGB passes unchanged
            images = tf.broadcast_to(images, tf.concat([tf.shape(images)[:3], [3]], axis=0))
        else:  # RGB is averaged, gray passes unchanged
            images = tf.reduce_mean(images, axis=-1, keepdims=True)
        images = tf.ensure_shape(images, [None, self.resolution, self.resolution, self.channels])
        features, logits = self._both(images, training=False)
        return tf.cast(features, tf.float32), tf.cast(logits, tf.float32)

    def save(self, path):
        """Writes PATH (must end in .weights.h5) and its JSON sidecar PATH.json."""
        if not path.endswith(_SUFFIX):
            raise ValueError(f"demo classifier weights must be saved to a *{_SUFFIX} file, got {path}")
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        self.model.save_weights(path)
        with open(path + ".json", "w") as f:
            json.dump({**self.info, "channels": self.channels, "resolution": self.resolution}, f, indent=1)

    @classmethod
    def load(cls, path):
        """The classifier saved at PATH (a .weights.h5 file with its PATH.json sidecar)."""
        if not os.path.exists(path):
            raise ValueError(f"demo classifier weights {path} not found; create them with "
                             f"`python tools/train_demo_classifier.py --output={path}`")
        if not os.path.exists(path + ".json"):
            raise ValueError(f"{path}.json (channels and resolution of {path}) not found; recreate both with "
                             f"`python tools/train_demo_classifier.py --output={path}`")
        with open(path + ".json") as f:
            info = json.load(f)
        channels, resolution = info.pop("channels"), info.pop("resolution")
        classifier = cls(channels=channels, resolution=resolution, info=info)
        classifier.model.load_weights(path)
        return classifier


def accuracy(classifier, images, labels, batch_size=1000):
    """Top-1 accuracy (a float in [0, 1]) on Fashion-MNIST uint8 images [N, 32, 32, 1] and labels [N]."""
    correct = 0
    for start in range(0, len(images), batch_size):
        batch = to_classifier_inputs(images[start:start + batch_size], classifier.channels)
        _, logits = classifier.features_and_logits(batch)
        correct += int(np.sum(np.argmax(logits.numpy(), axis=-1) == labels[start:start + batch_size]))
    return correct / len(images)


def train_demo_classifier(steps, batch_size=128, channels=3, learning_rate=1e-3, seed=0, data_dir=None):
    """Trains a demo classifier on the Fashion-MNIST train split -> (DemoClassifier, test accuracy in [0, 1]).

    `steps` Adam steps on shuffled batches (one permutation per epoch) with random horizontal flips, softmax
    cross-entropy; then the accuracy on the full 10k test split. Seeds Keras (weights) and NumPy (batches,
    flips) with `seed`; data_dir: the folder holding the IDX files (default Debian's).
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps} and {batch_size}")
    directory = data_dir or fashion_mnist.DEBIAN_DIR
    images, labels = fashion_mnist.load_arrays("train", directory)
    test_images, test_labels = fashion_mnist.load_arrays("test", directory)
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    classifier = DemoClassifier(channels=channels, resolution=images.shape[1])
    model = classifier.model
    optimizer = keras.optimizers.Adam(learning_rate)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(batch, batch_labels):
        with tf.GradientTape() as tape:
            loss = cross_entropy(batch_labels, model(to_classifier_inputs(batch, channels), training=True))
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    order = np.zeros([0], np.int64)
    for step in range(steps):
        if len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(len(images))])
        indices, order = order[:batch_size], order[batch_size:]
        batch = images[indices]
        flip = rng.random(batch_size) < 0.5
        batch[flip] = batch[flip, :, ::-1]
        loss = train_step(batch, labels[indices])
        if (step + 1) % 500 == 0:
            logging.info("demo classifier step %d/%d: loss %.4f", step + 1, steps, float(loss))
    test_accuracy = accuracy(classifier, test_images, test_labels)
    classifier.info = {"steps": steps, "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed,
                       "test_accuracy": test_accuracy}
    return classifier, test_accuracy
