"""Entry point: absl flags + gin -> task -> trainer / evaluator.

    python -m hit.main --gin_file=gin/demo/tiny_random.gin --model_dir=/tmp/run
    python -m hit.main --gin_file=gin/hit/ffhq_256_hit_b.gin --model_dir=gs://... --strategy=tpu --tpu=NAME
    TF_CONFIG=... python -m hit.main --gin_file=... --model_dir=gs://... --strategy=multi_worker  (on every worker)

Gin configures the trainer, the task and the data (see gin/); --gin_param overrides single bindings.
Includes inside gin files are resolved relative to the repository root.

The job (training or evaluation) runs in a worker thread so that the main thread can answer signals at once,
even while TensorFlow runs a long host call: the first Ctrl-C (SIGINT) or SIGTERM asks the trainer to
checkpoint after the current host call and exit cleanly; a second one ends the process at once without
saving (the last checkpoint on disk stays intact). Errors a user can fix print one `error: ...` line
(--verbose adds the traceback).
"""

import functools
import os
import shlex
import signal
import sys
import threading
import traceback

from absl import app, flags, logging

import hit  # noqa: F401  (selects the TensorFlow backend and quiets TensorFlow's C++ log; before TF's import)
import keras
import tensorflow as tf
from hit.configs import parse_gin
from hit.core import stop_signals
from hit.core.console import keep_project_lines
from hit.core.errors import one_line
from hit.data.pipeline import DataSource
from hit.eval.evaluator import Evaluator
from hit.tasks.vqhit import VQHiTTask
from hit.train.strategy import STRATEGIES, make_strategy
from hit.train.trainer import NonFiniteLossError, Trainer

MODES = ("train", "eval", "train_and_eval")
# Errors a user can act on (configuration, data, files): printed as one line. Anything else is a bug and keeps
# its traceback.
USER_ERRORS = (ValueError, OSError, tf.errors.OpError, NonFiniteLossError)

_GIN_FILE = flags.DEFINE_multi_string("gin_file", [], "Gin config files, parsed in order.")
_GIN_PARAM = flags.DEFINE_multi_string("gin_param", [], "Gin bindings, e.g. 'Trainer.train_steps = 1000'.")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Checkpoints, TensorBoard events and samples go here.")
_MODE = flags.DEFINE_enum("mode", "train", MODES, "What to run.")
_STRATEGY = flags.DEFINE_enum("strategy", "default", STRATEGIES, "tpu, mirrored (GPUs), multi_worker (a GPU or "
                              "CPU cluster described by TF_CONFIG) or default (one device).")
_TPU = flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy=tpu ('local' on a TPU VM).")
_DEVICES = flags.DEFINE_list("devices", None, "Devices for --strategy=mirrored (default: all GPUs).")
_EVAL_TIMEOUT = flags.DEFINE_integer("eval_timeout", None, "--mode=eval: stop after this many seconds without "
                                     "a new checkpoint (default: wait for the last one).")
_DETERMINISTIC = flags.DEFINE_bool("deterministic", False, "Op determinism and weights seeded from "
                                   "Trainer.seed: the same command gives the same checkpoints bit for bit "
                                   "(slower; see README).")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Tracebacks with errors, and TensorFlow's own Python log lines.")


class Job:
    """The work of one command, run in a worker thread; the main thread forwards stop requests to it."""

    def __init__(self, mode, model_dir):
        self.mode, self.model_dir = mode, model_dir
        self.trainer, self.error, self.finished, self.stop_requested = None, None, False, False

    def request_stop(self):
        self.stop_requested = True
        if self.trainer is not None:
            self.trainer.request_stop()

    def __call__(self):
        try:
            self._run()
        except BaseException as e:  # reported by the main thread
            self.error = e

    def _run(self):
        strategy = None
        if self.mode != "eval":  # the first TensorFlow op of the process: multi_worker must come before any other
            strategy = make_strategy(_STRATEGY.value, tpu=_TPU.value, devices=_DEVICES.value)
        trainer = Trainer(model_dir=self.model_dir, strategy=strategy)
        if _DETERMINISTIC.value:  # Keras' seed state is per thread: seed the thread that builds the models
            keras.utils.set_random_seed(trainer.seed)
        evaluate = None
        if self.mode != "train":
            evaluator, data_source = Evaluator(model_dir=self.model_dir), DataSource()
            evaluator.extractor  # noqa: B018  (load the feature extractor now: a missing file fails here)
            name, generator = trainer.task.eval_generator()
            evaluate = functools.partial(evaluator.evaluate_checkpoint, generator=generator, data=data_source,
                                         name=name)
        if self.mode == "eval":  # the separate eval job: follow the training job's checkpoints to the last one
            evaluator.run(generator, data_source, trainer.train_steps, timeout=_EVAL_TIMEOUT.value, name=name)
            return
        logging.info("Strategy %s with %d replicas", type(trainer.strategy).__name__,
                     trainer.strategy.num_replicas_in_sync)
        self.trainer = trainer
        if self.stop_requested:  # a signal came before the trainer existed
            trainer.request_stop()
        trainer.train(evaluate=evaluate)
        self.finished = trainer.completed_steps() >= trainer.train_steps


def _python():
    """How the user can call this interpreter: a relative path inside the working directory (.venv/...)."""
    relative = os.path.relpath(sys.executable)
    return relative if not relative.startswith("..") else sys.executable


def next_steps(model_dir, autoencoder=False):
    """What a finished run has made, and the commands to go on with (a VQ-HiT run: codes instead of samples)."""
    # The run's own bindings (config.gin holds them too): an eval job without them would wait for other steps.
    gin_flags = " ".join([f"--gin_file={f}" for f in _GIN_FILE.value] +
                         [shlex.quote(f"--gin_param={p}") for p in _GIN_PARAM.value])
    python = _python()
    samples = os.path.join(model_dir, "samples", "latest.png")
    return "\n".join([
        f"Done: {model_dir} holds the checkpoints" + (f"; samples in {samples}" if tf.io.gfile.exists(samples) else ""),
        "Next:",
        f"  TensorBoard:  tensorboard --logdir {model_dir}",
        f"  evaluate:     {python} -m hit.main {gin_flags} --model_dir={model_dir} --mode=eval",
        (f"  codes:        {python} tools/vq_codes.py --model_dir={model_dir} --images=FOLDER --output=codes.npy"
         if autoencoder else f"  sample:       {python} tools/sample.py --model_dir={model_dir}"),
        f"  export:       {python} tools/export.py --model_dir={model_dir}",
    ])


def _install_signal_handlers(job):
    if job.mode != "eval":
        stop_signals.install(job.request_stop, job.model_dir)
        return

    def stop_evaluating(signum, frame):  # nothing to save: every result is written as it is computed
        del frame
        sys.stderr.write(f"Stopped by {signal.Signals(signum).name}; results so far are in "
                         f"{os.path.join(job.model_dir, 'eval', 'results.jsonl')}\n")
        os._exit(128 + signum)

    for signum in stop_signals.HANDLED:
        signal.signal(signum, stop_evaluating)


def main(argv):
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    if not _MODEL_DIR.value:
        sys.exit("error: --model_dir is required")
    mode, model_dir = _MODE.value, _MODEL_DIR.value
    keep_project_lines(verbose=_VERBOSE.value)
    if tf.io.gfile.exists(model_dir) and not tf.io.gfile.isdir(model_dir):
        sys.exit(f"error: --model_dir {model_dir} is a file; give a directory for the run")
    if _DETERMINISTIC.value:
        tf.config.experimental.enable_op_determinism()
    job = Job(mode, model_dir)
    try:  # configuration errors surface here, before any work
        parse_gin(_GIN_FILE.value, _GIN_PARAM.value)
    except ValueError as e:
        sys.exit(f"error: {one_line(e)}")
    _install_signal_handlers(job)
    worker = threading.Thread(target=job, name="hit-job", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.5)  # signal handlers run in this thread between waits
    if job.error is not None:
        if _VERBOSE.value or not isinstance(job.error, USER_ERRORS):
            traceback.print_exception(job.error)
        if not isinstance(job.error, USER_ERRORS):
            sys.exit(1)
        sys.exit(f"error: {one_line(job.error)}")
    if job.finished:
        print(next_steps(model_dir, autoencoder=isinstance(job.trainer.task, VQHiTTask)), flush=True)


if __name__ == "__main__":
    app.run(main)
