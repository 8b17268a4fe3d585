"""Mixed precision (GAT facts 5.2, 9): bfloat16 compute with float32 variables, and float32 where it matters.

`policy_scope("bfloat16")` around model construction gives every layer Keras' "mixed_bfloat16" policy (variables
float32, computation bfloat16); the models keep normalisations' statistics, softmax inputs and their outputs in
float32 where they say so, and losses are computed in float32 by the tasks. `float32_compute(model)` runs a
model's layers in float32 for the calls made inside it (e.g. GAT's finite-difference penalties, which divide a
logit difference by sigma^2 = 1e-4): the policy is read when a layer is called, so under tf.function the switch
applies to the calls traced inside the context.
"""

import contextlib

import keras

PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def check_precision(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def check_task_precision(task, precision):
    """A task's `precision` argument: "float32" or "bfloat16". float16 would need loss scaling (GPU only; no task
    does it yet), so it is refused with the reason."""
    check_precision(precision)
    if precision == "float16":
        raise ValueError(f"{task}.precision 'float16' would need loss scaling, which {task} does not do; use "
                         "'bfloat16' (TPUs and CPUs with bfloat16 units) or 'float32'")
    return precision


@contextlib.contextmanager
def policy_scope(precision):
    """Layers created inside get the precision's Keras dtype policy (the global policy is restored after)."""
    policy = check_precision(precision)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@contextlib.contextmanager
def float32_compute(model):
    """Every layer of `model` computes in float32 inside the context (variables are float32 already)."""
    layers = list(model._flatten_layers(include_self=True))  # Keras 3: the model and all nested layers
    saved = [layer.dtype_policy for layer in layers]
    for layer in layers:
        if layer.compute_dtype != "float32":
            layer.dtype_policy = "float32"
    try:
        yield
    finally:
        for layer, policy in zip(layers, saved):
            layer.dtype_policy = policy
