"""The task contract as code, and what every task's step shares: each replica's batch and rows, the step's
seeds, the BatchNorm statistics' replica mean.

The trainer (hit.train.trainer.Trainer) never knows what a GAN is (docs/architecture.md): it builds a task,
checkpoints its checkpoint_items(), runs train_step in every replica, logs metric_names and learning_rates(), and writes
sample_images() as a grid; hit.main, the evaluator and the tools restore eval_generator().
"""

import math

import tensorflow as tf

from hit.core.seeds import stateless_normal, stateless_seed


class Task:
    """What the trainer, hit.main and the tools call. Subclasses set metric_names and sample_name and define
    every method that raises here.

    train_step runs in every replica (inside strategy.run) and does the whole step, EMA included; each replica
    returns its metrics (means over its batch), which the trainer sums and reduces over replicas once per host
    call. Its random draws are made for the global batch from (seed, step, stream) and sliced to the replica's
    rows (step_normal, replica_rows), so a run replays bit-identically on any number of replicas."""

    metric_names = ()  # the metrics train_step returns, in the order the log shows them
    sample_name = "samples"  # the TensorBoard tag of sample_images()

    def build(self, strategy, global_batch_size, seed=0, jit_compile=True):
        """Make the models and optimizers inside strategy.scope() (the optimizers built before the first step)."""
        raise NotImplementedError

    def checkpoint_items(self):
        """name -> trackable (models, optimizers) the checkpoints hold."""
        raise NotImplementedError

    @property
    def global_step(self):
        """The variable counting steps taken (it is in a checkpointed optimizer)."""
        raise NotImplementedError

    def learning_rates(self):
        """name -> learning rate, logged beside the metrics."""
        return {}

    def train_step(self, batch, step, replica_id):
        """One step on this replica's batch; returns {metric name: scalar}."""
        raise NotImplementedError

    def sample_images(self, num_samples, real_images):
        """[N, H, W, C] images in [-1, 1] for the trainer's sample grid; real_images(n) gives the first n images
        of the run's eval split, for tasks that show reconstructions."""
        raise NotImplementedError

    def eval_generator(self):
        """(checkpoint entry, a fresh model to restore it into): what evaluation, sampling and export use."""
        raise NotImplementedError

    def sampling_generator(self):
        """The EMA generator being trained, as an image generator (hit.models.samples), for measurements during
        training (hit.bench.compare); tasks without a generator (VQ-HiT) do not define it."""
        raise NotImplementedError

    # ---- the step's draws, made for the global batch ----------------------------------------------------

    def step_seed(self, step, stream):
        """The [2] seed of the step's draw number `stream` (hit.core.seeds, domain "step")."""
        return stateless_seed("step", self.seed, step, stream)

    def replica_rows(self, tensor, replica_id, axis=0):
        """This replica's rows (along `axis`) of a tensor drawn for the global batch."""
        begin = [0] * tensor.shape.rank
        begin[axis] = replica_id * self.per_replica_batch
        size = list(tensor.shape)
        size[axis] = self.per_replica_batch
        return tf.slice(tensor, tf.stack(begin), size)

    def step_normal(self, shape, step, stream, replica_id, axis=0):
        """This replica's rows of N(0, I) drawn with shape `shape` (the global batch along `axis`)."""
        return self.replica_rows(stateless_normal(shape, self.step_seed(step, stream)), replica_id, axis)


class TwoOptimizers(Task):
    """A task with a generator_optimizer and a discriminator_optimizer."""

    @property
    def global_step(self):
        """Steps taken: the generator optimizer's iteration count (as the official code)."""
        return self.generator_optimizer.iterations

    def learning_rates(self):
        return {"generator_lr": self.generator_optimizer.learning_rate,
                "discriminator_lr": self.discriminator_optimizer.learning_rate}


def per_replica_batch(task_name, global_batch_size, num_replicas, bn_group_size=None):
    """The per-replica batch; one-line errors when the global batch or the BatchNorm groups do not split."""
    if global_batch_size % num_replicas:
        raise ValueError(f"global batch {global_batch_size} does not split over {num_replicas} replicas")
    batch = global_batch_size // num_replicas
    if bn_group_size and batch % bn_group_size:
        raise ValueError(
            f"{task_name}.bn_group_size {bn_group_size} does not divide the per-replica batch {batch} (global "
            f"{global_batch_size} over {num_replicas} replica{'s' if num_replicas > 1 else ''}); choose a divisor, "
            f"e.g. --gin_param='{task_name}.bn_group_size = {math.gcd(bn_group_size, batch)}'")
    return batch


def average_replica_statistics(variables, num_replicas):
    """In the replica step: each replica's copy of `variables` (BatchNorm statistics) <- their replica mean.

    Keras 3 moves each replica's copy on its own batch; the official Keras 2 variables were read as the
    replica MEAN, by the EMA and by checkpoints. Averaging after every step gives those same values (the
    moving averages are linear), and keeps every replica's copy (and EMA) identical."""
    if num_replicas == 1 or not variables:
        return
    # tf.identity: under MultiWorkerMirroredStrategy a variable's read has no device, which all_reduce needs.
    values = [tf.identity(v.value) for v in variables]
    means = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.MEAN, values)
    for variable, mean in zip(variables, means):
        variable.assign(mean)
