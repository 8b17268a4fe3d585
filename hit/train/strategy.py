"""Distribution strategies from the command line: TPU, mirrored (GPUs or given devices), or default."""

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "tpu")


def make_strategy(kind="default", tpu=None, devices=None):
    """tpu: TPUClusterResolver(tpu) (a name, grpc:// address or "local"); mirrored: `devices` or all GPUs."""
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(devices or None)
    if kind == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        tf.config.set_soft_device_placement(True)  # summaries and host-side ops stay off the TPU
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {kind!r}; expected one of {STRATEGIES}")
