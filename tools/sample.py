"""Write a PNG grid of generator samples.

Until training lands this samples a freshly initialised generator (a smoke test of the whole model):
    python tools/sample.py --preset=hit_tiny_32 --output=samples/grid.png
Samples are G(z, training=False) with z ~ N(0, I), clipped to [-1, 1] before quantisation.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
import tensorflow as tf  # noqa: E402

import hit  # noqa: E402,F401  (selects the TensorFlow backend)
from hit.images import write_png  # noqa: E402
from hit.models import get_generator  # noqa: E402

_PRESET = flags.DEFINE_string("preset", "hit_tiny_32", "Generator preset.")
_OUTPUT = flags.DEFINE_string("output", "samples/grid.png", "PNG file to write.")
_NUM = flags.DEFINE_integer("num_samples", 16, "Number of samples in the grid.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the latent codes and of the initial weights.")


def main(argv):
    del argv
    if _NUM.value < 1:
        sys.exit(f"error: --num_samples must be positive, got {_NUM.value}")
    tf.keras.utils.set_random_seed(_SEED.value)
    try:
        generator = get_generator(_PRESET.value)
    except ValueError as e:
        sys.exit(f"error: {e}")
    z = tf.random.stateless_normal([_NUM.value, generator.latent_dim], seed=[_SEED.value, 0])
    images = generator(z, training=False)
    write_png(_OUTPUT.value, images)
    logging.info("wrote %d samples of shape %s to %s", _NUM.value, images.shape[1:], _OUTPUT.value)
    print(_OUTPUT.value)


if __name__ == "__main__":
    app.run(main)
