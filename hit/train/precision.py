"""Mixed precision (official GAT scripts/train_256_B2.sh trains in bf16): bfloat16 compute with float32 variables,
and float32 where it matters.

`policy_scope("bfloat16")` around model construction gives every layer Keras' "mixed_bfloat16" policy (variables
float32, computation bfloat16); the models keep normalisations' statistics, softmax inputs and their outputs in
float32 where they say so, and losses are computed in float32 by the tasks. `float32_compute(model)` runs a
model's layers in float32 for the calls made inside it (e.g. GAT's finite-difference penalties, which divide a
logit difference by sigma^2 = 1e-4): the policy is read when a layer is called, so under tf.function the switch
applies to the calls traced inside the context.

"float16" (Keras' mixed_float16, for GPUs) adds dynamic loss scaling: `loss_scaled(optimizer)` wraps a task's
optimizers in `DynamicLossScale`, the tasks multiply their losses by `optimizer.scale_loss` inside the tape, and the
optimizer divides the gradients back, skipping the update (and halving the scale) when any replica's gradient is
not finite. bfloat16 has float32's exponent range and needs none of it.
"""

import contextlib

import keras
import numpy as np
import tensorflow as tf

PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def check_precision(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


class DynamicLossScale(keras.optimizers.LossScaleOptimizer):
    """Keras' dynamic loss scaling (initial scale 2^15; x2 after 2000 finite steps; on a non-finite gradient the
    update is skipped and the scale halved), made right for a step that applies gradients in every replica:

    - Keras decides on the first replica's gradients alone (under merge_call), or on each replica's own (without
      it), while the gradients are summed only later, inside the inner optimizer. Here the replicas first agree
      (one all-reduce of a flag), so all of them skip together and no replica sums an inf into the weights.
    - A skipped step still counts as a step (the inner optimizer's `iterations`, which the tasks' global_step
      and the trainer's step read): the trainer, the data position, the per-step seeds and the EMA schedule move
      on as if the step had been taken; only the weights and Adam's moments stay unchanged.
    """

    def apply(self, grads, trainable_variables=None):
        grads = list(grads)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            dense = [tf.convert_to_tensor(g) for g in grads if g is not None]
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in dense])
            failed = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.logical_not(finite), tf.float32))
            finite = failed == 0
            first = next(i for i, g in enumerate(grads) if g is not None)
            poison = tf.where(finite, 0.0, np.nan)  # every replica's own check then sees what the others saw
            grads[first] = tf.convert_to_tensor(grads[first]) + tf.cast(poison, grads[first].dtype)
        super().apply(grads, trainable_variables)

    def _stateful_handle_non_finite_grads(self):
        super()._stateful_handle_non_finite_grads()
        self.inner_optimizer.iterations.assign_add(1)


def loss_scaled(optimizer, precision):
    """The optimizer a task steps with: wrapped in DynamicLossScale under float16, as it is otherwise."""
    return DynamicLossScale(optimizer) if precision == "float16" else optimizer


def inner_gradient_scale(optimizer):
    """What a gradient taken INSIDE a loss (R1's dD/dx) is scaled by before it is squared: the optimizer's loss
    scale under float16, so small input gradients do not underflow in float16; None otherwise."""
    return optimizer.dynamic_scale if isinstance(optimizer, DynamicLossScale) else None


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
