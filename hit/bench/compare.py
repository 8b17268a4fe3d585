"""Generators trained for the same wall-clock budget and measured at the same time marks (Table 1's comparison of
HiT with ConvNet-R1, at the demo's scale, and GAT against HiT; tools/compare_generators.py).

Each run is a gin configuration of a generator task (the HiT demo, the ConvNet demo, the GAT demos, ...), trained
from scratch in this process one after the other, each with the data, discriminator, losses and optimiser its gin
file gives. A class-conditional generator (GAT) samples every class in turn (seed s: class s % K), decoded to
images (the task's sampling_generator). A run's
clock runs while its trainer does (building, tracing, steps, checkpoints) and stops while it is measured. At each
mark, the first host call that ends past it, the EMA generator (sampled as the evaluation protocol does,
training=False) is measured with the demo classifier (hit.eval.classifier_distance):
- fcd: the Fréchet classifier distance of num_samples samples to the test split (the demo's FID);
- classifier_score: the Inception Score computed with the demo classifier (higher: confident, varied classes);
- class_min, class_max: the smallest and largest share of samples the classifier puts in one class, as a
  multiple of uniform (1 / classes); "every class within a factor 2 of uniform" is class_min >= 0.5 and
  class_max <= 2 (compare.jsonl also holds every class's share, class_shares, in the classifier's label order);
- duplicates: the share of coverage_samples samples whose nearest other sample (classifier features) is closer
  than the 1st percentile of the same nearest-neighbour distance among as many real test images (so about 0.01
  for the real data);
- class_duplicates: the same within each class, averaged over the classes: samples and real test images grouped
  by the class the classifier predicts (the same rule for conditional and unconditional generators), each class's
  threshold the 1st percentile among as many real images of that class. A class whose samples are near-copies of
  a few images scores high here even when the classes are balanced (compare.jsonl: class_duplicate_shares).
Every run trains until the last mark; with until_last_mark=False a run that ends (Trainer.train_steps) before a
mark is measured at its end, for the marks left.

Writes into output_dir: compare.jsonl (one line per run and mark), compare.md (the table) and compare.png (one
column per run, one row per mark, each cell 80 samples of the same seeds in 10 columns: for a conditional
generator, column k holds class k), and each run's model_dir beside.
"""

import contextlib
import datetime
import json
import os
import platform
import time
from typing import NamedTuple

import gin
import numpy as np
import tensorflow as tf
from absl import logging

from hit.core.files import write_atomically
from hit.core.gin_bindings import parse_bindings
from hit.core.images import image_grid, rgb_if_mixed, to_uint8
from hit.data.pipeline import DataSource
from hit.eval.evaluator import Evaluator
from hit.eval.precision_recall import knn_radii
from hit.inference import sampling
from hit.train.checkpoints import latest_checkpoint
from hit.train.trainer import Trainer

GRID_SAMPLES, GRID_COLUMNS, GAP = 80, 10, 8


class Run(NamedTuple):
    name: str
    gin_files: tuple


def parse_run(text):
    """'NAME=GIN[+GIN...]' -> Run; a one-line ValueError otherwise."""
    name, sep, files = text.partition("=")
    if not sep or not name or not files or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"bad run {text!r}: expected NAME=GIN_FILE[+GIN_FILE...] with NAME of letters, digits, "
                         "'_' or '-'")
    return Run(name, tuple(files.split("+")))


def check_marks(marks):
    marks = [float(m) for m in marks]
    if not marks or any(m <= 0 for m in marks) or sorted(set(marks)) != marks:
        raise ValueError(f"time marks must be positive and increasing, got {marks}")
    return marks


class _Clock:
    """Seconds since start, not counting the time spent inside paused()."""

    def __init__(self):
        self._start, self._paused = time.monotonic(), 0.0

    def seconds(self):
        return time.monotonic() - self._start - self._paused

    @contextlib.contextmanager
    def paused(self):
        start = time.monotonic()
        try:
            yield
        finally:
            self._paused += time.monotonic() - start


def _duplicate_share(features, real_features):
    """Share of samples nearer their nearest other sample than the 1st percentile among as many real ones; None
    with fewer than 2 of either."""
    count = min(len(features), len(real_features))
    if count < 2:
        return None
    threshold = np.percentile(knn_radii(real_features[:count], k=1), 1)
    return float(np.mean(knn_radii(features[:count], k=1) < threshold))


def coverage(features, logits, real_features, real_logits):
    """class_min, class_max (shares of the predicted classes over uniform), duplicates and class_duplicates (see
    the module)."""
    features, real_features = np.asarray(features, np.float64), np.asarray(real_features, np.float64)
    num_classes = logits.shape[-1]
    predicted, real_predicted = np.argmax(logits, axis=-1), np.argmax(real_logits, axis=-1)
    shares = np.bincount(predicted, minlength=num_classes) * num_classes / len(logits)
    per_class = [_duplicate_share(features[predicted == k], real_features[real_predicted == k])
                 for k in range(num_classes)]
    measured = [share for share in per_class if share is not None]
    return {"class_min": float(shares.min()), "class_max": float(shares.max()),
            "duplicates": _duplicate_share(features, real_features),
            "class_duplicates": float(np.mean(measured)) if measured else float("nan"),
            "class_shares": [round(float(share), 3) for share in shares],
            "class_duplicate_shares": [None if share is None else round(share, 3) for share in per_class]}


def _features(evaluator, batches):
    features, logits = [], []
    for images in batches:
        f, lg = evaluator.extractor.features_and_logits(images)
        features.append(np.asarray(f))
        logits.append(np.asarray(lg))
    return np.concatenate(features), np.concatenate(logits)


def real_features_and_logits(evaluator, data, count):
    """The classifier's features and logits of the first `count` images of the eval split."""
    return _features(evaluator, (b["image"] for b in data.eval_dataset(evaluator.batch_size, count)))


def measure(generator, evaluator, data, real, coverage_samples, seed=0):
    """The module's measures of a generator (evaluator: the demo classifier's; real: (features, logits) of real
    test images, real_features_and_logits)."""
    metrics, _ = evaluator.evaluate(generator, data)
    features, logits = _features(evaluator, sampling.sample_batches(generator, coverage_samples, seed=seed + 1))
    return {"fcd": float(metrics["fid"]), "classifier_score": float(metrics["inception_score"]),
            **coverage(features, logits, *real)}


def _train_and_measure(run, marks, output_dir, evaluator, coverage_samples, seed):
    """(rows, grids) of one run: its trainer from the parsed gin config, measured at each mark."""
    model_dir = os.path.join(output_dir, run.name)
    if latest_checkpoint(model_dir):  # a resumed run would start its clock from someone else's steps
        raise ValueError(f"{model_dir} already holds a checkpoint; give a fresh output directory")
    data = DataSource()
    evaluator.reference(data)  # once, before training: a missing classifier fails here
    real = real_features_and_logits(evaluator, evaluator.real_data(data), coverage_samples)
    rows, pending, last, reached = [], list(marks), None, 0
    clock = _Clock()
    trainer = Trainer(model_dir=model_dir)
    if not hasattr(trainer.task, "sampling_generator"):
        raise ValueError(f"run {run.name}: compare_generators trains generator tasks (HiT, ConvNet, GAT), got "
                         f"{type(trainer.task).__name__}")

    def record(step):
        nonlocal last
        seconds = clock.seconds()
        generator = trainer.task.sampling_generator()
        logging.info("%s: measuring at %.0f s (step %d)", run.name, seconds, step)
        last = {"trained_s": round(seconds, 1), "step": step,
                **measure(generator, evaluator, data, real, coverage_samples, seed)}
        logging.info("%s at %.0f s: %s", run.name, seconds,
                     ", ".join(f"{k} {v:.3f}" for k, v in last.items() if isinstance(v, float) and k != "trained_s"))
        last["grid"] = image_grid(to_uint8(sampling.sample(generator, GRID_SAMPLES, seed=seed)).numpy(), GRID_COLUMNS)

    def after_host_call(step):
        nonlocal reached
        reached = step
        if clock.seconds() < pending[0]:
            return
        with clock.paused():
            record(step)
            while pending and last["trained_s"] >= pending[0]:
                rows.append({"run": run.name, "mark_s": pending.pop(0), **last})
        if not pending:
            trainer.request_stop()

    trainer.train(after_host_call=after_host_call)
    if pending and reached < trainer.train_steps:  # Ctrl-C: nothing to measure at the marks left
        raise ValueError(f"run {run.name} stopped at step {reached}, before the {pending} s mark(s)")
    if pending:  # it finished training before these marks: its final generator is its result at them
        logging.info("%s finished at step %d before the %s s mark(s)", run.name, trainer.train_steps, pending)
        if last is None or last["step"] != trainer.train_steps:
            record(trainer.train_steps)
        rows += [{"run": run.name, "mark_s": mark, **last} for mark in pending]
    grids = [row.pop("grid") for row in rows]
    return rows, grids


def _table(rows, note):
    head = ("| run | mark (s) | trained (s) | step | FCD | classifier score | classes (min-max x uniform) | "
            "duplicates | within a class |\n|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(f"| {r['run']} | {r['mark_s']:g} | {r['trained_s']:.0f} | {r['step']} | {r['fcd']:.2f} | "
                   f"{r['classifier_score']:.2f} | {r['class_min']:.2f}-{r['class_max']:.2f} | "
                   f"{r['duplicates']:.3f} | {r['class_duplicates']:.3f} |\n" for r in rows)
    return note + "\n\n" + head + body


def _panel(grids, num_runs):
    """Cells [run-major] -> one image: a column per run, a row per mark, GAP white pixels between cells."""
    grids = rgb_if_mixed(grids)  # a 1-channel run beside 3-channel ones
    cells = np.stack(grids).reshape(num_runs, -1, *grids[0].shape)  # [runs, marks, h, w, c]
    cells = np.pad(cells, [(0, 0), (0, 0), (0, GAP), (0, GAP), (0, 0)], constant_values=255)
    runs, marks, h, w, c = cells.shape
    return cells.transpose(1, 2, 0, 3, 4).reshape(marks * h, runs * w, c)[:-GAP, :-GAP]


def compare(runs, marks, output_dir, gin_params=(), weights_path="runs/demo_classifier.weights.h5",
            num_samples=10_000, coverage_samples=2000, batch_size=500, seed=0, until_last_mark=True):
    """Train and measure each Run (see the module); returns the rows of the table. The caller registers the
    configurables the runs' gin files name (hit.configs.register_configurables). until_last_mark: every run
    trains until the last mark whatever its Trainer.train_steps (the same budget for all; its log's ETA then
    counts to a billion steps); False keeps each run's train_steps."""
    marks = check_marks(marks)
    names = [run.name for run in runs]
    if not runs or len(set(names)) != len(names):
        raise ValueError(f"give one or more runs with distinct names, got {names}")
    tf.io.gfile.makedirs(output_dir)
    rows, grids = [], []
    for run in runs:
        gin.clear_config()
        parse_bindings(list(run.gin_files), list(gin_params) + (["Trainer.train_steps = 1000000000"]
                                                                 if until_last_mark else []))
        # The same measurement for every run: unquantised samples, every class in turn; the run's gin may only
        # say where its real images are (Evaluator.reference_data, for latent data).
        evaluator = Evaluator(model_dir=output_dir, protocol="demo_classifier", weights_path=weights_path,
                              num_samples=num_samples, batch_size=batch_size,
                              inception_split=min(1000, num_samples), kid_samples=coverage_samples, seed=seed,
                              reference_batch=None, precision_recall=False, truncation_psi=0.0, labels="balanced",
                              quantize=False)
        run_rows, run_grids = _train_and_measure(run, marks, output_dir, evaluator, coverage_samples, seed)
        rows += run_rows
        grids += run_grids
    lines = "".join(json.dumps(row) + "\n" for row in rows)
    write_atomically(os.path.join(output_dir, "compare.jsonl"), lines.encode())
    note = (f"Measured {datetime.date.today()} on {platform.machine()} with {os.cpu_count()} cores, TensorFlow "
            f"{tf.__version__}; runs: " + "; ".join(f"{r.name} = {' + '.join(r.gin_files)}" for r in runs)
            + (f"; bindings: {'; '.join(gin_params)}" if gin_params else "")
            + (". Every run trained until the last mark" if until_last_mark else "")
            + f". FCD over {num_samples} samples; classes and duplicates over {coverage_samples}; a "
            "class-conditional run samples every class in turn.")
    write_atomically(os.path.join(output_dir, "compare.md"), _table(rows, note).encode())
    png = tf.io.encode_png(_panel(grids, len(runs))).numpy()
    write_atomically(os.path.join(output_dir, "compare.png"), png)
    return rows

