"""Print one JSON line describing a generator preset: parameter counts and per-stage output shapes.

    python tools/model_summary.py --preset=hit_b_256
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

import hit  # noqa: E402,F401  (selects the TensorFlow backend)
from hit.models import get_generator  # noqa: E402

_PRESET = flags.DEFINE_string("preset", None, "Generator preset, e.g. hit_b_256.", required=True)


def count(variables):
    return int(sum(v.numpy().size for v in variables))


def summarize(preset):
    """Parameter counts (trainable / non-trainable) and, per stage, its output and running image."""
    generator = get_generator(preset)
    stages = []
    for i, shapes in enumerate(generator.stage_shapes()):
        resolution = 8 * 2**i
        stages.append({"stage": i, "resolution": resolution, "output": shapes["features"],
                       "image": shapes["image"]})
    return {
        "preset": preset,
        "trainable_params": count(generator.trainable_variables),
        "non_trainable_params": count(generator.non_trainable_variables),
        "latent_dim": generator.latent_dim,
        "output_shape": stages[-1]["image"],
        "stages": stages,
    }


def main(argv):
    del argv
    try:
        summary = summarize(_PRESET.value)
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(json.dumps(summary))


if __name__ == "__main__":
    app.run(main)
