"""Distribution strategies from the command line: TPU, mirrored (GPUs or given devices), multi-worker
(GPU or CPU clusters, from TF_CONFIG) or default."""

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
_TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
                      '"task": {"type": "worker", "index": 0}}')


def make_strategy(kind="default", tpu=None, devices=None):
    """tpu: TPUClusterResolver(tpu) (a name, grpc:// address or "local"); mirrored: `devices` or all GPUs;
    multi_worker: MultiWorkerMirroredStrategy over the cluster in TF_CONFIG (all local GPUs, else the CPU, of
    every worker). multi_worker must be made at program start, before any other TensorFlow op runs."""
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(devices or None)
    if kind == "multi_worker":
        _check_tf_config(os.environ.get("TF_CONFIG"))
        # Default CommunicationOptions (AUTO): NCCL between GPUs, RING over gRPC between CPUs.
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        tf.config.set_soft_device_placement(True)  # summaries and host-side ops stay off the TPU
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {kind!r}; expected one of {STRATEGIES}")


def _check_tf_config(text):
    """A one-line ValueError unless TF_CONFIG is JSON naming a cluster and this process's task in it."""
    problem = "is not set"
    if text:
        try:
            config = json.loads(text)
            cluster, task = config["cluster"], config["task"]
            if 0 <= task["index"] < len(cluster[task["type"]]):
                return
            problem = f"is {text!r}: the task is not in the cluster"
        except (ValueError, TypeError, KeyError) as e:
            problem = f"is {text!r} ({type(e).__name__}: {e})"
    raise ValueError(f"--strategy=multi_worker needs TF_CONFIG, the JSON of the cluster and this process's task "
                     f"(e.g. {_TF_CONFIG_EXAMPLE}); TF_CONFIG {problem}")


def is_chief(strategy):
    """Whether this process writes the run's files (checkpoints, summaries, samples). Only multi-worker
    strategies have other processes: there, the 'chief' task, or worker 0 when the cluster has no chief."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type in (None, "chief"):  # None: no cluster, one process
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs
