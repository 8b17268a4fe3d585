"""Train generators for the same wall-clock budget and measure them at the same time marks (hit.bench.compare): the
demo's version of Table 1's HiT vs ConvNet-R1, and GAT (class-conditional: every class in turn) against HiT.
Writes compare.md (the table, also printed), compare.jsonl and compare.png (a column of samples per run, a row per
mark) into --output_dir.

    python tools/compare_generators.py --output_dir=runs/compare \
        --run=hit=gin/demo/fashion_mnist_32.gin --run=convnet=gin/demo/fashion_mnist_32_convnet.gin

Needs the demo classifier (python tools/train_demo_classifier.py --output=runs/demo_classifier.weights.h5).
Each run trains from scratch, one after the other; its clock counts building, tracing and training, not the
measurements.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

import hit  # noqa: E402,F401  (selects the TensorFlow backend; before TensorFlow, see hit/__init__.py)
from hit.bench import compare  # noqa: E402
from hit.configs import register_configurables  # noqa: E402
from hit.core.console import keep_project_lines  # noqa: E402
from hit.core.errors import one_line  # noqa: E402

_RUN = flags.DEFINE_multi_string("run", ["hit=gin/demo/fashion_mnist_32.gin",
                                         "convnet=gin/demo/fashion_mnist_32_convnet.gin"],
                                 "NAME=GIN_FILE[+GIN_FILE...], once per run.")
_MARKS = flags.DEFINE_list("marks", ["60", "120", "240"], "Seconds of training at which to measure each run.")
_OUTPUT = flags.DEFINE_string("output_dir", None, "Where the runs and the table go (fresh).", required=True)
_GIN_PARAM = flags.DEFINE_multi_string("gin_param", [], "Gin bindings for every run.")
_CLASSIFIER = flags.DEFINE_string("classifier", "runs/demo_classifier.weights.h5", "The demo classifier's weights.")
_SAMPLES = flags.DEFINE_integer("num_samples", 10000, "Samples for the FCD and classifier score.")
_COVERAGE = flags.DEFINE_integer("coverage_samples", 2000, "Samples for the class shares and duplicates.")
_BATCH = flags.DEFINE_integer("batch_size", 500, "Evaluation batch size.")
_UNTIL_LAST = flags.DEFINE_bool("until_last_mark", True, "Train every run until the last mark (the same budget); "
                                "--nountil_last_mark keeps each run's Trainer.train_steps.")


def main(argv):
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    keep_project_lines()
    register_configurables()  # every task a run's gin may name
    try:
        runs = [compare.parse_run(text) for text in _RUN.value]
        compare.compare(runs, _MARKS.value, _OUTPUT.value, _GIN_PARAM.value, _CLASSIFIER.value, _SAMPLES.value,
                        _COVERAGE.value, _BATCH.value, until_last_mark=_UNTIL_LAST.value)
    except (ValueError, OSError) as e:
        sys.exit(f"error: {one_line(e)}")
    with open(os.path.join(_OUTPUT.value, "compare.md")) as f:
        print(f.read(), end="")


if __name__ == "__main__":
    app.run(main)
