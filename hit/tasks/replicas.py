"""What every task's step needs to know about replicas: each one's batch, and the BatchNorm statistics' mean."""

import math

import tensorflow as tf


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
