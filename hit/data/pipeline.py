"""The training input function: source -> shard per input pipeline -> per-replica batches (facts 5.2)."""

import gin
import tensorflow as tf

from hit.data.random_images import random_images

SOURCES = ("random",)


@gin.configurable(module="hit.data")
def make_train_dataset(input_context, global_batch_size, seed, start_step=0, name="random", resolution=32,
                       channels=3):
    """A dataset of per-replica batches {"image": [B, H, W, C] in [-1, 1]} for one input pipeline.

    Called by `strategy.distribute_datasets_from_function`; replica r of a step receives the pipeline's r-th
    per-replica batch, so a step's global batch does not depend on the number of replicas. `start_step` is
    where a resumed run continues when its input iterator could not be checkpointed.
    """
    per_replica = input_context.get_per_replica_batch_size(global_batch_size)
    if name == "random":
        dataset = random_images(resolution, channels, seed, start=start_step * global_batch_size)
    else:
        raise ValueError(f"unknown data set {name!r}; known: {SOURCES}")
    dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    dataset = dataset.batch(per_replica, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_symbolic_checkpoint = True  # checkpoints store positions, not buffered images
    return dataset.with_options(options)
