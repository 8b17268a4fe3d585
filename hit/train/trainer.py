"""The training loop, generic over tasks (docs/architecture.md: the trainer never knows what a GAN is).

A task is what hit.tasks.base.Task writes down: build, checkpoint_items, global_step, metric_names,
learning_rates, train_step(batch, step, replica_id), sample_images(num, real_images) and sample_name. train_step
runs in every replica (inside strategy.run) and does the whole step, EMA included; each replica adds its metrics
to its own sums, which are reduced over replicas once per host call. So per step nothing runs in cross-replica
code, which on a TPU is the host.

Each host call runs up to `steps_per_loop` steps inside one tf.function (200 by default, as
hit-gan trainers/base_trainer.py); chunks
end on log / checkpoint / sample boundaries so those happen at exact steps. Checkpoints are written atomically
by tf.train.CheckpointManager (the `checkpoint` index file is replaced only after the new files are complete),
resume is automatic (from the newest checkpoint on disk, after the run's config.gin is compared with the current
bindings: hit.train.run_config; a damaged checkpoint is a one-line error naming the newest intact one:
hit.train.checkpoints), a stop request (request_stop(); SIGTERM or SIGINT when train() runs in the main thread)
saves at the end of the current host call before returning, and a non-finite loss stops training before
anything is saved, so the last good checkpoint stays the latest.

Under MultiWorkerMirroredStrategy every worker runs this loop on the shared model_dir. Saving is collective, so
every worker saves, but only the chief (hit.train.strategy.is_chief) into model_dir, the others into temporary
directories deleted at once. Only the chief writes summaries, samples and config files and runs evaluations.
Before each host call the workers agree on stopping: a signal to any of them stops all at the same step.
"""

import datetime
import math
import os
import shutil
import tempfile
import threading
import time

import gin
from absl import logging
import tensorflow as tf

from hit.core import stop_signals
from hit.core.errors import one_line
from hit.data.pipeline import data_stats, first_eval_images, make_train_dataset
from hit.train import checkpoints, summaries
from hit.train.checkpoints import checkpoint_step, make_checkpoint
from hit.train.run_config import check_resumed_config
from hit.train.strategy import is_chief


class NonFiniteLossError(RuntimeError):
    """Training produced NaN or Inf; the checkpoints on disk are untouched."""


@gin.configurable(module="hit.train")
class Trainer:
    def __init__(self, task=gin.REQUIRED, model_dir=gin.REQUIRED, strategy=None, train_steps: int = gin.REQUIRED,
                 global_batch_size: int = gin.REQUIRED, steps_per_loop=200, checkpoint_every=1000,
                 keep_checkpoints=10, sample_every=1000, num_samples=16, seed=0, jit_compile=True,
                 dataset_fn=make_train_dataset, checkpoint_data_iterator=True, eval_every=0, log_every=0,
                 check_resumed_config=True, real_images_fn=first_eval_images):
        """log_every: steps between console/TensorBoard reports (means over the steps since the last one);
        0 reports after every host call. Short host calls with a longer log_every keep stops quick and the
        log short. check_resumed_config: refuse to resume a run started with other bindings
        (hit.train.run_config). real_images_fn(n): the first n real images, for tasks whose sample grid shows
        reconstructions (VQ-HiT)."""
        for name, value in [("train_steps", train_steps), ("global_batch_size", global_batch_size),
                            ("steps_per_loop", steps_per_loop), ("checkpoint_every", checkpoint_every)]:
            if value < 1:
                raise ValueError(f"Trainer.{name} must be positive, got {value}")
        if log_every < 0:
            raise ValueError(f"Trainer.log_every must be 0 or positive, got {log_every}")
        self.task = task
        self.model_dir = model_dir
        self.strategy = strategy or tf.distribute.get_strategy()
        self.chief = is_chief(self.strategy)
        self._multi_worker = isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy)
        self.train_steps = train_steps
        self.global_batch_size = global_batch_size
        self.steps_per_loop = steps_per_loop
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        self.sample_every = sample_every
        self.num_samples = num_samples
        self.seed = seed
        self.jit_compile = jit_compile
        self.dataset_fn, self.real_images_fn = dataset_fn, real_images_fn
        self.checkpoint_data_iterator = checkpoint_data_iterator
        self.eval_every = eval_every
        self.log_every = log_every
        self.check_resumed_config = check_resumed_config
        self._stop_requested = False
        self._data_stats = {}

    # ---- set-up -------------------------------------------------------------------------------------

    def _set_up(self):
        self.task.build(self.strategy, self.global_batch_size, self.seed, self.jit_compile)
        items = self.task.checkpoint_items()
        latest = checkpoints.latest_checkpoint(self.model_dir)
        if latest:
            for name, item in items.items():  # another model: one line, before TensorFlow logs every variable
                checkpoints.check_model_variables(latest, name, item, f"{name} this config builds")
            try:  # expect_partial: the data iterator in the checkpoint is restored by _data_iterator.
                checkpoints.restore(make_checkpoint(items), latest).expect_partial().assert_existing_objects_matched()
            except AssertionError as e:  # its message can hold whole weight arrays
                raise ValueError(f"cannot resume from {latest}: {one_line(e)[:300]}") from None
            logging.info("Resumed from %s", latest)
        self.iterator, iterator_saved = self._data_iterator(latest, int(self.task.global_step.numpy()))
        # A fresh object for saving: one with a pending restore would restore whatever is attached to it.
        self.checkpoint = make_checkpoint({**items, **({"data_iterator": self.iterator} if iterator_saved else {})})
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.model_dir, self.keep_checkpoints)
        self.writer = tf.summary.create_file_writer(self.model_dir) if self.chief else tf.summary.create_noop_writer()
        with self.strategy.scope():  # one sum per replica, read as the mean over replicas
            self._metric_sums = {name: tf.Variable(0.0, trainable=False, name=f"sum_{name}",
                                                   synchronization=tf.VariableSynchronization.ON_READ,
                                                   aggregation=tf.VariableAggregation.MEAN)
                                 for name in self.task.metric_names}
        self._train_loop = tf.function(self._train_loop_fn)
        self._stop_votes = tf.function(self._stop_votes_fn)

    def _make_iterator(self, start_step):
        return iter(self.strategy.distribute_datasets_from_function(
            lambda context: self.dataset_fn(context, self.global_batch_size, self.seed, start_step=start_step)))

    def _data_iterator(self, latest, start_step):
        """(iterator, whether checkpoints save it). The input iterator is saved where the strategy allows
        (the default strategy's iterator is checkpointable; MirroredStrategy's and TPUStrategy's are not in
        TF 2.20). Otherwise the dataset starts at `start_step`: exact for deterministic sources, a fresh
        shuffle for others."""
        def by_step():
            return self._make_iterator(start_step)

        if not self.checkpoint_data_iterator:
            return by_step(), False
        iterator = self._make_iterator(0)
        try:
            saved = tf.train.Checkpoint(data_iterator=iterator)
        except ValueError:
            logging.info("This strategy's input iterator cannot be checkpointed; data resumes by step")
            return by_step(), False
        if latest:
            try:
                # The models' restore has just read every other tensor: damage is ruled out, a failure here
                # is a changed pipeline.
                saved.restore(latest).expect_partial().assert_existing_objects_matched()
            except (AssertionError, tf.errors.OpError) as e:  # none saved, or the pipeline has changed
                logging.warning("Cannot restore the data iterator from %s (%s); data resumes by step",
                                latest, type(e).__name__)
                return by_step(), True
        return iterator, True

    def _replica_step(self, batch):
        # Multi-worker input iterators leave the batch size unknown (they allow a partial last batch); ours are
        # endless with drop_remainder, and the tasks (and XLA) want it static.
        size = self.global_batch_size // self.strategy.num_replicas_in_sync
        batch = tf.nest.map_structure(
            lambda t: tf.ensure_shape(t, [size, *t.shape[1:]]) if t.shape[0] is None else t, batch)
        step = tf.identity(self.task.global_step.value)  # this replica's copy: the step this update makes, from 0
        replica_id = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int32)
        metrics = self.task.train_step(batch, step, replica_id)
        for name, total in self._metric_sums.items():
            total.assign_add(metrics[name])

    def _train_loop_fn(self, iterator, num_steps):
        """num_steps steps in one host call; returns each metric's mean over them and over replicas."""
        for total in self._metric_sums.values():
            total.assign(0.0)
        for _ in tf.range(num_steps):
            self.strategy.run(self._replica_step, args=(next(iterator),))
        return {name: total.read_value() / tf.cast(num_steps, tf.float32)
                for name, total in self._metric_sums.items()}

    # ---- the loop -----------------------------------------------------------------------------------

    def _next_stop(self, step):
        """The next step at which the host must act: a log, checkpoint or sample boundary, or the end."""
        optional = [k for k in (self.sample_every, self.eval_every, self.log_every) if k]
        intervals = [self.steps_per_loop, self.checkpoint_every] + optional
        return min([self.train_steps] + [(step // k + 1) * k for k in intervals])

    def request_stop(self):
        """Stop at the end of the current host call, after a checkpoint (thread- and signal-safe)."""
        self._stop_requested = True

    def completed_steps(self):
        """The step of the latest checkpoint in model_dir (0 without one), read without building anything."""
        latest = checkpoints.latest_checkpoint(self.model_dir)
        return checkpoint_step(latest) if latest else 0

    def train(self, evaluate=None, after_host_call=None):
        """Train to train_steps (resuming from the latest checkpoint); returns the last metrics.

        evaluate(checkpoint_path), if given, runs after the checkpoints at multiples of eval_every and at the
        end (--mode=train_and_eval; on the chief alone). after_host_call(step), if given, runs after each host
        call and its checkpoint and samples (hit.bench.compare measures generators at wall-clock marks with it and
        stops the run with request_stop()). A run already at train_steps returns {} at once, saying so."""
        evaluate = evaluate if self.chief else None
        done = self.completed_steps()
        if done and self.check_resumed_config:  # before anything is restored, or config.gin overwritten
            check_resumed_config(self.model_dir)
        if done >= self.train_steps:
            logging.info("%s is already trained to %d steps; raise Trainer.train_steps to continue (e.g. "
                         "--gin_param='Trainer.train_steps = %d')", self.model_dir, done, 2 * done)
            return {}
        tf.io.gfile.makedirs(self.model_dir)
        if self.chief:
            for name in checkpoints.remove_leftovers(self.model_dir):
                logging.warning("Removed %s: the files of a checkpoint save that did not finish", name)
        self._set_up()
        step = int(self.task.global_step.numpy())
        logging.info("Training %s from step %d to %d", self.model_dir, step, self.train_steps)
        self._write_config(step, operative=False)
        self._report_data_stats(step)
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous_handlers = stop_signals.install(self.request_stop, self.model_dir) if in_main_thread else {}
        metrics, saved_step, first_call, stopped = {}, step, True, False
        window = _Window()
        try:
            while step < self.train_steps:
                if self._stop_agreed():
                    stopped = True
                    break
                num_steps = self._next_stop(step) - step
                start = time.time()
                metrics = {k: float(v) for k, v in self._train_loop(self.iterator, tf.constant(num_steps)).items()}
                elapsed = time.time() - start
                bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
                if bad:
                    raise NonFiniteLossError(
                        f"non-finite {', '.join(bad)} in steps {step + 1}-{step + num_steps}; training stopped "
                        f"and nothing was saved (latest checkpoint: {self.manager.latest_checkpoint})")
                step += num_steps
                window.add(metrics, num_steps, elapsed)
                if first_call:  # every configurable has been used by now
                    self._write_config(step, operative=True)
                    first_call = False
                if (not self.log_every or step % self.log_every == 0 or step == self.train_steps
                        or self._stop_requested):
                    self._report(step, *window.flush())
                # Samples before the checkpoint: a run killed between the two redoes these steps, grid included.
                if self.chief and self.sample_every and step % self.sample_every == 0:
                    self._write_samples(step)
                if step % self.checkpoint_every == 0 or step == self.train_steps:
                    path = self._save(step)
                    saved_step = step
                    if evaluate and ((self.eval_every and step % self.eval_every == 0) or step == self.train_steps):
                        evaluate(path)
                if after_host_call:
                    after_host_call(step)
            if stopped and saved_step != step:
                self._save(step)
            if stopped:
                logging.info("Stopped at step %d; run the same command again to resume", step)
        finally:
            stop_signals.restore(previous_handlers)
            self.writer.flush()
        return metrics

    def _stop_agreed(self):
        """Whether to stop before the next host call: with several workers, whether any of them was asked to."""
        if not self._multi_worker:
            return self._stop_requested
        return float(self._stop_votes(tf.constant(float(self._stop_requested)))) > 0

    def _stop_votes_fn(self, vote):
        """This worker's vote summed with every other worker's (a collective: all workers call it together)."""
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, self.strategy.run(tf.identity, args=(vote,)), axis=None)

    def _save(self, step):
        """Saves in model_dir (the chief), or else into a temporary directory deleted at once: saving is
        collective (reading some distributed variables is), so every worker must save."""
        if not self.chief:
            directory = tempfile.mkdtemp(prefix="hit_worker_checkpoint_")
            try:
                tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=1).save(checkpoint_number=step)
            finally:
                shutil.rmtree(directory, ignore_errors=True)
            return None
        try:
            path = self.manager.save(checkpoint_number=step)
        except BaseException:  # a full disk, a kill: the half-written files go, the last complete checkpoint stays
            checkpoints.remove_leftovers(self.model_dir)
            raise
        logging.info("Saved %s", path)
        return path

    def _write_config(self, step, operative):
        if self.chief:
            summaries.write_config(self.writer, self.model_dir, step, operative)

    def _report_data_stats(self, step):
        """Counters of the input pipeline (e.g. skipped_images), logged and written whenever they change."""
        stats = data_stats()
        if stats != self._data_stats:
            self._data_stats = stats
            logging.info("Data: %s", stats)
            summaries.write_scalars(self.writer, step, {f"data/{k}": v for k, v in stats.items()})

    def _report(self, step, metrics, num_steps, elapsed):
        self._report_data_stats(step)
        steps_per_sec = num_steps / max(elapsed, 1e-9)
        images_per_sec = steps_per_sec * self.global_batch_size
        eta = datetime.timedelta(seconds=round((self.train_steps - step) / steps_per_sec))
        logging.info("step %d/%d | %s | %.1f images/s | ETA %s", step, self.train_steps,
                     " ".join(f"{k} {v:.4f}" for k, v in metrics.items()), images_per_sec, eta)
        rates = {k: float(tf.convert_to_tensor(v)) for k, v in self.task.learning_rates().items()}
        summaries.write_scalars(self.writer, step, {
            **{f"train/{k}": v for k, v in metrics.items()},
            **{f"train/{k}": v for k, v in rates.items()},
            "train/steps_per_sec": steps_per_sec, "train/images_per_sec": images_per_sec,
        })

    def _write_samples(self, step):
        images = self.task.sample_images(self.num_samples, self.real_images_fn)
        path = os.path.join(self.model_dir, "samples", f"step_{step:08d}.png")
        summaries.write_image_grid(self.writer, step, f"samples/{self.task.sample_name}", images, path)


class _Window:
    """Metrics of the host calls since the last report: step-weighted means, steps and seconds."""

    def __init__(self):
        self.sums, self.steps, self.seconds = {}, 0, 0.0

    def add(self, metrics, num_steps, elapsed):
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v * num_steps
        self.steps += num_steps
        self.seconds += elapsed

    def flush(self):
        """(mean metrics, steps, seconds), then empty."""
        out = ({k: v / self.steps for k, v in self.sums.items()}, self.steps, self.seconds)
        self.sums, self.steps, self.seconds = {}, 0, 0.0
        return out
