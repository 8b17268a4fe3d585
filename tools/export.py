"""Export a run's generator as a versioned SavedModel for TF Serving.

    python tools/export.py --model_dir=runs/demo --export_dir=exports/hit_demo
    docker run -p 8501:8501 -v "$PWD/exports/hit_demo:/models/hit" -e MODEL_NAME=hit tensorflow/serving

The EMA generator of the latest checkpoint by default; the version defaults to the checkpoint's step.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import tensorflow as tf  # noqa: E402

import hit  # noqa: E402,F401  (selects the TensorFlow backend)
from hit.export import export_generator  # noqa: E402
from hit.sampling import load_generator  # noqa: E402

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "The training run (holds config.gin and checkpoints).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A checkpoint path (default: the latest in --model_dir).")
_WHICH = flags.DEFINE_string("which", "ema_generator", "ema_generator or generator.")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "The model's base directory for TF Serving.")
_VERSION = flags.DEFINE_integer("version", None, "Version sub-directory (default: the checkpoint's step).")


def main(argv):
    del argv
    if not _EXPORT_DIR.value or not (_MODEL_DIR.value or _CHECKPOINT.value):
        sys.exit("error: --export_dir and one of --model_dir / --checkpoint are required")
    try:
        checkpoint = _CHECKPOINT.value or tf.train.latest_checkpoint(_MODEL_DIR.value)
        if not checkpoint:
            raise ValueError(f"no checkpoint found in {_MODEL_DIR.value}")
        generator = load_generator(model_dir=_MODEL_DIR.value, checkpoint=checkpoint, which=_WHICH.value)
        version = _VERSION.value if _VERSION.value is not None else int(checkpoint.rsplit("-", 1)[1])
        path = export_generator(generator, _EXPORT_DIR.value, version)
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(path)


if __name__ == "__main__":
    app.run(main)
