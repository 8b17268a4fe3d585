"""Entry point: absl flags + gin -> task -> trainer.

    python -m hit.main --gin_file=gin/demo/tiny_random.gin --model_dir=/tmp/run
    python -m hit.main --gin_file=gin/hit/ffhq_256_hit_b.gin --model_dir=gs://... --strategy=tpu --tpu=NAME

Gin configures the trainer, the task and the data (see gin/); --gin_param overrides single bindings.
Includes inside gin files are resolved relative to the repository root.
"""

import functools
import os
import sys

from absl import app, flags, logging

import hit  # noqa: F401  (selects the TensorFlow backend)
import gin
from hit import data, tasks, train  # noqa: F401  (registers the configurables)
from hit.data import DataSource
from hit.errors import one_line
from hit.eval.evaluator import Evaluator
from hit.train import NonFiniteLossError, Trainer, make_strategy
from hit.train.strategy import STRATEGIES

MODES = ("train", "eval", "train_and_eval")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_GIN_FILE = flags.DEFINE_multi_string("gin_file", [], "Gin config files, parsed in order.")
_GIN_PARAM = flags.DEFINE_multi_string("gin_param", [], "Gin bindings, e.g. 'Trainer.train_steps = 1000'.")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Checkpoints, TensorBoard events and samples go here.")
_MODE = flags.DEFINE_enum("mode", "train", MODES, "What to run.")
_STRATEGY = flags.DEFINE_enum("strategy", "default", STRATEGIES, "tpu, mirrored (GPUs) or default (one device).")
_TPU = flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy=tpu ('local' on a TPU VM).")
_DEVICES = flags.DEFINE_list("devices", None, "Devices for --strategy=mirrored (default: all GPUs).")
_EVAL_TIMEOUT = flags.DEFINE_integer("eval_timeout", None, "--mode=eval: stop after this many seconds without "
                                     "a new checkpoint (default: wait for the last one).")


def parse_gin(files, params):
    """Parse gin; an unknown key, bad value or missing file is a one-line ValueError."""
    gin.add_config_file_search_path(REPO_ROOT)
    try:
        gin.parse_config_files_and_bindings(files, params)
    except (ValueError, SyntaxError, OSError) as e:
        raise ValueError(f"bad gin config: {one_line(e)}") from None


def main(argv):
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    if not _MODEL_DIR.value:
        sys.exit("error: --model_dir is required")
    mode, model_dir = _MODE.value, _MODEL_DIR.value
    try:  # configuration errors surface here, before any training or evaluation
        parse_gin(_GIN_FILE.value, _GIN_PARAM.value)
        strategy = make_strategy(_STRATEGY.value, tpu=_TPU.value, devices=_DEVICES.value) if mode != "eval" else None
        trainer = Trainer(model_dir=model_dir, strategy=strategy)
        evaluate = None
        if mode != "train":
            evaluator, data_source = Evaluator(model_dir=model_dir), DataSource()
            evaluator.extractor  # noqa: B018  (load the feature extractor now: a missing file fails here)
            name, generator = trainer.task.eval_generator()
            evaluate = functools.partial(evaluator.evaluate_checkpoint, generator=generator, data=data_source,
                                         name=name)
    except ValueError as e:
        sys.exit(f"error: {one_line(e)}")
    if mode == "eval":  # the separate eval job: follow the training job's checkpoints until the last one
        evaluator.run(generator, data_source, trainer.train_steps, timeout=_EVAL_TIMEOUT.value, name=name)
        return
    logging.info("Strategy %s with %d replicas", type(strategy).__name__, strategy.num_replicas_in_sync)
    try:
        trainer.train(evaluate=evaluate)
    except NonFiniteLossError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    app.run(main)
