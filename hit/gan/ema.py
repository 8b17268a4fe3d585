"""Exponential moving average of a model's variables (official hit-gan utils/moving_averages.py): an EMA
generator for evaluation.

Every variable is averaged, BatchNorm statistics included (Keras's optimizer `use_ema` covers trainable ones
only). Variables are paired by path below the model's name, so the EMA model may have another name, and a
mismatch between the two models is a one-line error.

`update` is meant for the replica step (GANTask calls it, XLA-compiled, inside `strategy.run`): Keras 3 variables
have no aggregation, so an assignment in a replica writes that replica's copy, with no `merge_call` (the
official code's crash under MirroredStrategy, hit-gan issue #1) and no transfer to the host (what a cross-replica
update costs on a TPU). Every replica computes the same values, so the copies stay identical. It also works in
cross-replica context, where it writes every copy.
"""

import tensorflow as tf


def _relative_paths(model):
    return {v.path.split("/", 1)[1]: v for v in model.variables}


class ExponentialMovingAverage:
    """ema <- w at step == start_step (a hard copy); ema <- ema - (1 - decay)(ema - w) after it; nothing before.

    copy_non_trainable: non-trainable variables (buffers such as GAT's w_avg) are copied at every update instead of
    averaged (StyleGAN's convention); the HiT GAN averages its BatchNorm statistics too (the default)."""

    def __init__(self, model, ema_model, decay=0.999, start_step=10, copy_non_trainable=False):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        source, target = _relative_paths(model), _relative_paths(ema_model)
        if source.keys() != target.keys():
            raise ValueError(
                f"EMA model does not match: missing {sorted(source.keys() - target.keys())[:3]}, "
                f"extra {sorted(target.keys() - source.keys())[:3]}"
            )
        self.pairs = [(target[path], source[path]) for path in sorted(source)]
        for ema_variable, variable in self.pairs:
            if ema_variable.shape != variable.shape:
                raise ValueError(f"EMA variable {ema_variable.path} has shape {ema_variable.shape}, "
                                 f"its source {variable.shape}")
        self.decay = decay
        self.start_step = start_step
        self.copied = {id(variable) for _, variable in self.pairs if copy_non_trainable and not variable.trainable}

    def update(self, step):
        """Call once after every optimizer step with the global step reached (1 after the first step)."""
        step = tf.convert_to_tensor(step, tf.int64)
        rate = tf.where(step > self.start_step, 1.0 - self.decay, 0.0)
        copy = tf.equal(step, self.start_step)
        for ema_variable, variable in self.pairs:
            ema_value, value = ema_variable.value, variable.value
            if id(variable) in self.copied:
                ema_variable.assign(tf.where(step >= self.start_step, value, ema_value))
                continue
            averaged = ema_value - tf.cast(rate, ema_value.dtype) * (ema_value - value)
            ema_variable.assign(tf.where(copy, value, averaged))
