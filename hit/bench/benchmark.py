"""Throughput of models and train steps against the machine's own limit (issue 14; tools/benchmark.py).

Each measurement is the median of `steps` timed calls after one untimed call (tracing / XLA compilation), at a
fixed batch, in graph mode or XLA-compiled, in float32, bfloat16 or float16 (Keras' mixed_bfloat16 /
mixed_float16 policies: float32 variables; a float16 train step scales its losses, as on a GPU). FLOPs per image
are the matmul / einsum / conv FLOPs of the traced computation (hit.bench.flops), so
    achieved GFLOP/s = FLOPs per call / seconds per call,
    fraction of limit = achieved / the GFLOP/s of a dense square matmul of the same dtype timed in the same run.
Machines differ from day to day: compare lines measured in one run, never with numbers from another day.
"""

import datetime
import os
import statistics
import time

import tensorflow as tf

from hit.bench.flops import count_flops
from hit.models.gat_discriminator import GATDiscriminator
from hit.models.gat_generator import GATGenerator
from hit.models.presets import (CONVNET_PRESETS, GAT_GENERATOR_PRESETS, GENERATOR_PRESETS, VQHIT_PRESETS,
                                get_discriminator, get_generator, get_vqhit)
from hit.train.precision import check_precision, policy_scope


def median_seconds(fn, steps):
    """Median wall time of fn() over `steps` calls after one untimed call; fn returns tensors (waited for)."""
    def call():
        for t in tf.nest.flatten(fn()):
            t.numpy()

    call()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(dtype="float32", size=2048, steps=5):
    """GFLOP/s of a dense [size, size] x [size, size] matmul in `dtype` (graph mode; what the machine's BLAS or
    oneDNN reaches, the limit the models are measured against)."""
    a = tf.cast(tf.random.stateless_normal([size, size], [0, 1]), dtype)
    b = tf.cast(tf.random.stateless_normal([size, size], [0, 2]), dtype)
    fn = tf.function(lambda: tf.matmul(a, b))
    return 2.0 * size**3 / median_seconds(fn, steps) / 1e9


def machine():
    """Where and when: what a JSON line needs to be read beside others of the same run."""
    return {"date": datetime.date.today().isoformat(), "tensorflow": tf.__version__, "cpus": os.cpu_count(),
            "device": tf.test.gpu_device_name() or "cpu"}


def _model(preset, precision):
    """(model, example inputs of a batch, how to call it) for any generator, D or VQ-HiT preset."""
    with policy_scope(precision):
        if preset in VQHIT_PRESETS:
            model = get_vqhit(preset)
        elif any(preset in p for p in (GENERATOR_PRESETS, GAT_GENERATOR_PRESETS, CONVNET_PRESETS)):
            model = get_generator(preset)
        else:
            model = get_discriminator(preset)  # names every known preset when this one is unknown too

    def inputs(batch):
        labels = tf.zeros([batch], tf.int32)
        if isinstance(model, GATGenerator):  # (z, labels)
            return tf.random.stateless_normal([batch, model.latent_dim], [0, 1]), labels
        if isinstance(model, GATDiscriminator):  # (stacked noisy latents, labels)
            shape = [batch, model.resolution, model.resolution, model.input_channels]
            return tf.random.stateless_normal(shape, [0, 1]), labels
        if hasattr(model, "latent_dim"):  # HiT and ConvNet generators: z
            return (tf.random.stateless_normal([batch, model.latent_dim], [0, 1]),)
        channels = getattr(model, "image_channels", 3)  # D and VQ-HiT: images
        return (tf.random.stateless_uniform([batch, model.resolution, model.resolution, channels], [0, 1], -1, 1),)

    return model, inputs


def inference(preset, batch, precision="float32", jit_compile=False, steps=5):
    """Forward passes of one preset (generators: z -> images; D: images -> logits; VQ-HiT: images -> images)."""
    check_precision(precision)
    model, make_inputs = _model(preset, precision)
    args = make_inputs(batch)
    fn = tf.function(lambda *a: model(*a, training=False), jit_compile=jit_compile)
    flops = count_flops(fn.get_concrete_function(*args))["total"]  # the graph's ops (XLA compiles them later)
    seconds = median_seconds(lambda: fn(*args), steps)
    return _line("inference", preset, batch, precision, jit_compile, seconds, flops)


def train_step(task, batch, precision="float32", jit_compile=False, steps=3):
    """A task's whole replica step (task.train_step: forward, penalties, both updates, EMA) on random data of
    its resolution, one replica. `task`: an unbuilt task object (GANTask, VQHiTTask or GATTask), whose
    precision is the one timed."""
    task.build(tf.distribute.get_strategy(), batch, jit_compile=jit_compile)
    batch_data = _random_batch(task, batch)
    step = tf.function(lambda s: task.train_step(batch_data, s, tf.constant(0)))
    calls = iter(range(10**9))
    flops = count_flops(step.get_concrete_function(tf.constant(0, tf.int64)))["total"]  # XLA parts nested
    seconds = median_seconds(lambda: step(tf.constant(next(calls), tf.int64)), steps)
    name = "/".join(getattr(task, a) for a in ("generator_preset", "model_preset", "discriminator_preset")
                    if hasattr(task, a))
    return _line("train_step", f"{type(task).__name__}:{name}", batch, precision, jit_compile, seconds, flops)


def _random_batch(task, batch):
    if hasattr(task, "channels") and hasattr(task, "num_classes"):  # GATTask: latents (or images) and labels
        shape = [batch, task.resolution, task.resolution, task.channels]
        return {"latent": tf.random.stateless_normal(shape, [0, 3]), "label": tf.zeros([batch], tf.int32)}
    shape = [batch, task.resolution, task.resolution, 3]
    return {"image": tf.random.stateless_uniform(shape, [0, 3], -1.0, 1.0)}


def _line(kind, name, batch, precision, jit_compile, seconds, flops):
    rate = flops / seconds / 1e9
    return {"kind": kind, "model": name, "batch": batch, "precision": precision, "jit_compile": jit_compile,
            "ms_per_call": round(1000 * seconds, 2), "images_per_sec": round(batch / seconds, 3),
            "gflop_per_image": round(flops / batch / 1e9, 4), "achieved_gflops": round(rate, 2)}


def with_limit(line, limits):
    """The line with the same-dtype matmul rate of this run and the fraction of it the model reached."""
    # The fraction is computed from the two rounded rates the line shows, so that a reader's division agrees with it
    # (with a tiny matmul, the limit's rounding alone moved the fraction by 1.5%: CI's one failure of the test).
    limit = round(limits[line["precision"]], 1)
    return {**line, "matmul_gflops": limit, "fraction_of_matmul": round(line["achieved_gflops"] / limit, 3)}

