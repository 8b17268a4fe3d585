"""The training loop, generic over tasks (DESIGN.md: "the trainer never knows what a GAN is").

A task provides: build(strategy, global_batch_size, seed, jit_compile), checkpoint_items(), global_step,
metric_names, learning_rates(), train_step(batch, step, replica_id) (per replica), after_step()
(cross-replica, e.g. EMA) and sample_images(num).

Each host call runs up to `steps_per_loop` steps inside one tf.function (facts 5.1: 200 by default); chunks
end on checkpoint / sample boundaries so those happen at exact steps. Checkpoints are written atomically by
tf.train.CheckpointManager (the `checkpoint` index file is replaced only after the new files are complete),
resume is automatic, SIGTERM (TPU preemption) saves before exiting, and a non-finite loss stops training
before anything is saved, so the last good checkpoint stays the latest.
"""

import datetime
import math
import os
import signal
import threading
import time

import gin
from absl import logging
import tensorflow as tf

from hit.data import data_stats, make_train_dataset
from hit.train import summaries
from hit.train.checkpoints import make_checkpoint


class NonFiniteLossError(RuntimeError):
    """Training produced NaN or Inf; the checkpoints on disk are untouched."""


@gin.configurable(module="hit.train")
class Trainer:
    def __init__(self, task=gin.REQUIRED, model_dir=gin.REQUIRED, strategy=None, train_steps=gin.REQUIRED,
                 global_batch_size=gin.REQUIRED, steps_per_loop=200, checkpoint_every=1000,
                 keep_checkpoints=10, sample_every=1000, num_samples=16, seed=0, jit_compile=True,
                 dataset_fn=make_train_dataset, checkpoint_data_iterator=True, eval_every=0):
        for name, value in [("train_steps", train_steps), ("global_batch_size", global_batch_size),
                            ("steps_per_loop", steps_per_loop), ("checkpoint_every", checkpoint_every)]:
            if value < 1:
                raise ValueError(f"Trainer.{name} must be positive, got {value}")
        self.task = task
        self.model_dir = model_dir
        self.strategy = strategy or tf.distribute.get_strategy()
        self.train_steps = train_steps
        self.global_batch_size = global_batch_size
        self.steps_per_loop = steps_per_loop
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        self.sample_every = sample_every
        self.num_samples = num_samples
        self.seed = seed
        self.jit_compile = jit_compile
        self.dataset_fn = dataset_fn
        self.checkpoint_data_iterator = checkpoint_data_iterator
        self.eval_every = eval_every
        self._stop_requested = False

    # ---- set-up -------------------------------------------------------------------------------------

    def _set_up(self):
        self.task.build(self.strategy, self.global_batch_size, self.seed, self.jit_compile)
        items = self.task.checkpoint_items()
        latest = tf.train.latest_checkpoint(self.model_dir)
        if latest:
            make_checkpoint(items).restore(latest).assert_existing_objects_matched()
            logging.info("Resumed from %s", latest)
        self.iterator, iterator_saved = self._data_iterator(latest, int(self.task.global_step.numpy()))
        # A fresh object for saving: one with a pending restore would restore whatever is attached to it.
        self.checkpoint = make_checkpoint({**items, **({"data_iterator": self.iterator} if iterator_saved else {})})
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.model_dir, self.keep_checkpoints)
        self.writer = tf.summary.create_file_writer(self.model_dir)
        self._train_loop = tf.function(self._train_loop_fn)

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
                saved.restore(latest).assert_existing_objects_matched().expect_partial()
            except (AssertionError, tf.errors.OpError) as e:  # none saved, or the pipeline has changed
                logging.warning("Cannot restore the data iterator from %s (%s); data resumes by step",
                                latest, type(e).__name__)
                return by_step(), True
        return iterator, True

    def _replica_step(self, batch, step):
        replica_id = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int32)
        return self.task.train_step(batch, step, replica_id)

    def _train_loop_fn(self, iterator, num_steps):
        """num_steps steps in one host call; returns each metric's mean over them."""
        totals = {name: tf.constant(0.0) for name in self.task.metric_names}
        for _ in tf.range(num_steps):
            step = tf.identity(self.task.global_step.value)  # the step this update makes, counted from 0
            per_replica = self.strategy.run(self._replica_step, args=(next(iterator), step))
            self.task.after_step()
            totals = {name: totals[name] + self.strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica[name],
                                                                  axis=None)
                      for name in totals}
        return {name: total / tf.cast(num_steps, tf.float32) for name, total in totals.items()}

    # ---- the loop -----------------------------------------------------------------------------------

    def _next_stop(self, step):
        """The next step at which the host must act: a log, checkpoint or sample boundary, or the end."""
        optional = [k for k in (self.sample_every, self.eval_every) if k]
        intervals = [self.steps_per_loop, self.checkpoint_every] + optional
        return min([self.train_steps] + [(step // k + 1) * k for k in intervals])

    def _request_stop(self, signum, frame):
        del frame
        logging.warning("Received signal %d: checkpointing and stopping after the current host call", signum)
        self._stop_requested = True

    def train(self, evaluate=None):
        """Train to train_steps (resuming from the latest checkpoint); returns the last metrics.

        evaluate(checkpoint_path), if given, runs after the checkpoints at multiples of eval_every and at the
        end (--mode=train_and_eval)."""
        tf.io.gfile.makedirs(self.model_dir)
        self._set_up()
        step = int(self.task.global_step.numpy())
        summaries.write_config(self.writer, self.model_dir, step, operative=False)
        stats = data_stats()
        if stats:  # e.g. images skipped as undecodable, counted when the data set was built
            logging.info("Data: %s", stats)
            summaries.write_scalars(self.writer, step, {f"data/{k}": v for k, v in stats.items()})
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous_handler = signal.signal(signal.SIGTERM, self._request_stop) if in_main_thread else None
        metrics, saved_step, first_call = {}, step, True
        try:
            while step < self.train_steps and not self._stop_requested:
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
                if first_call:  # every configurable has been used by now
                    summaries.write_config(self.writer, self.model_dir, step, operative=True)
                    first_call = False
                self._report(step, metrics, num_steps, elapsed)
                if step % self.checkpoint_every == 0 or step == self.train_steps:
                    path = self._save(step)
                    saved_step = step
                    if evaluate and ((self.eval_every and step % self.eval_every == 0) or step == self.train_steps):
                        evaluate(path)
                if self.sample_every and step % self.sample_every == 0:
                    self._write_samples(step)
            if self._stop_requested and saved_step != step:
                self._save(step)
                logging.info("Stopped by signal at step %d; resume by running the same command", step)
        finally:
            if in_main_thread:
                signal.signal(signal.SIGTERM, previous_handler)
            self.writer.flush()
        return metrics

    def _save(self, step):
        path = self.manager.save(checkpoint_number=step)
        logging.info("Saved %s", path)
        return path

    def _report(self, step, metrics, num_steps, elapsed):
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
        images = self.task.sample_images(self.num_samples)
        path = os.path.join(self.model_dir, "samples", f"step_{step:08d}.png")
        summaries.write_image_grid(self.writer, step, "samples/ema_generator", images, path)
