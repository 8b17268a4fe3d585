"""Export a run's generator, or its VQ-HiT autoencoder, as a versioned SavedModel for TF Serving.

    python tools/export.py --model_dir=runs/demo      # -> runs/demo/export/<step>/
    docker run -p 8501:8501 -v "$PWD/runs/demo/export:/models/hit" -e MODEL_NAME=hit tensorflow/serving

The run's config.gin says what it trained (hit.inference.runs.run_kind). A GAN run exports the EMA generator of the
latest checkpoint by default (--which=generator: the raw weights); a VQ-HiT run exports its autoencoder (the
checkpoint's "model", signatures encode / decode / reconstruct, hit/inference/export.py), and --which, a GAN flag, is an
error there unless left at its default. The version defaults to the checkpoint's step and --export_dir to
<model_dir>/export (with only --checkpoint, the checkpoint's directory is the model_dir).
Prints the version directory written.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

import hit  # noqa: E402,F401  (before TensorFlow: it sets TensorFlow's environment, see hit/__init__.py)
import tensorflow as tf  # noqa: E402,F401  (after hit: tests/test_tools.py checks the order)
from hit.core.console import keep_project_lines  # noqa: E402
from hit.core.errors import one_line  # noqa: E402
from hit.inference.export import export_autoencoder, export_generator  # noqa: E402
from hit.inference.runs import load_autoencoder, load_generator, run_checkpoint, run_kind  # noqa: E402
from hit.train.checkpoints import checkpoint_step  # noqa: E402

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "The training run (holds config.gin and checkpoints).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A checkpoint path (default: the latest in --model_dir).")
_WHICH = flags.DEFINE_string("which", "ema_generator", "GAN runs: ema_generator or generator.")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "The model's base directory for TF Serving "
                                  "(default: <model_dir>/export).")
_VERSION = flags.DEFINE_integer("version", None, "Version sub-directory (default: the checkpoint's step).")


def main(argv):
    del argv
    keep_project_lines()
    if not (_MODEL_DIR.value or _CHECKPOINT.value):
        sys.exit("error: one of --model_dir / --checkpoint is required")
    export_dir = _EXPORT_DIR.value or os.path.join(_MODEL_DIR.value or os.path.dirname(_CHECKPOINT.value), "export")
    try:
        model_dir, checkpoint = run_checkpoint(_MODEL_DIR.value, _CHECKPOINT.value)
        version = _VERSION.value if _VERSION.value is not None else checkpoint_step(checkpoint)
        if run_kind(model_dir) == "vqhit":
            if _WHICH.value != _WHICH.default:
                raise ValueError(f"--which is for GAN runs; {model_dir} trained VQ-HiT, whose autoencoder is exported")
            path = export_autoencoder(load_autoencoder(model_dir, checkpoint), export_dir, version)
        else:
            generator = load_generator(model_dir=model_dir, checkpoint=checkpoint, which=_WHICH.value)
            path = export_generator(generator, export_dir, version)
    except ValueError as e:
        sys.exit(f"error: {e}")
    except (OSError, tf.errors.OpError) as e:  # a full disk, a read-only folder
        sys.exit(f"error: cannot write the export to {export_dir}: {one_line(e)}")
    print(path)


if __name__ == "__main__":
    app.run(main)
