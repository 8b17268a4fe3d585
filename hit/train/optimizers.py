"""Adam and AdamW as the official implementations update: dense gradients, and for AdamW global-norm clipping of
the gradient summed over replicas (official GAT train.py: clip 1.0, G and D).

Dense gradients. An embedding lookup (class embeddings, a VQ codebook) gets a tf.IndexedSlices gradient with one row
per lookup, so a class or code used twice in a batch has duplicate rows. Keras 3's Adam applies such a gradient row
by row: m sums the duplicates correctly, but v adds the square of each duplicate instead of the square of their
sum, and the row moves by lr * (a + b) / sqrt(a^2 + b^2) instead of lr * sign(a + b). PyTorch (GAT: nn.Embedding,
dense gradients) and Keras 2's optimizers (hit-gan: duplicates summed before the sparse update) both update with the
summed gradient. `DenseGradients` converts such gradients to dense tensors before anything else
(tests/test_gat_reference_step.py found it; tests/test_gat_losses.py checks it).

AdamW's epsilon. torch.optim.AdamW (GAT) divides by sqrt(v / (1 - beta2^t)) + eps; Keras (like Keras 2 and TF's
ApplyAdam, which hit-gan's Adam used: `Adam` keeps it) by sqrt(v) + eps after folding sqrt(1 - beta2^t) into the
step size, an epsilon larger by 1 / sqrt(1 - beta2^t): 10x at the first step with beta2 = 0.99, 1.25x at step 100.
It matters for gradient entries near 1e-7, of which a transformer at init has many. `AdamW.update_step` is torch's.

Keras 3 clips (`global_clipnorm`) in `apply` before its TensorFlow backend sums the replicas' gradients, so under
a distribution strategy each replica's share is clipped on its own: a run on N replicas clips N partial
gradients instead of the batch's gradient, and differs from the same run on one device. Here the clip moves
after the sum, where a single device has it: the replicas' gradients are summed (as Keras does), the sum is
clipped to `clip_norm` by its global norm (tf.clip_by_global_norm), and the update proceeds. Keras' own
clipping options stay off.
"""

import keras
import tensorflow as tf
from keras import ops


class DenseGradients:
    """Mixin for a Keras optimizer: tf.IndexedSlices gradients become dense (duplicate rows summed) before the
    update (the module docstring)."""

    def apply(self, grads, trainable_variables=None):
        grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
        return super().apply(grads, trainable_variables)


class Adam(DenseGradients, keras.optimizers.Adam):
    """keras.optimizers.Adam updating with dense gradients."""


class AdamW(DenseGradients, keras.optimizers.AdamW):
    """keras.optimizers.AdamW(**kwargs) with dense gradients, plus clip_norm: the global norm bound of the
    replica-summed gradient."""

    def __init__(self, clip_norm=None, **kwargs):
        if any(kwargs.get(k) is not None for k in ("clipnorm", "clipvalue", "global_clipnorm")):
            raise ValueError("use clip_norm (applied after the replica sum), not Keras' clipping options")
        if clip_norm is not None and clip_norm <= 0:
            raise ValueError(f"clip_norm must be positive, got {clip_norm}")
        if not hasattr(keras.optimizers.AdamW, "_all_reduce_sum_gradients"):  # Keras' TF backend hook
            raise RuntimeError("this Keras version has no _all_reduce_sum_gradients; hit.train.optimizers needs "
                               "updating")
        super().__init__(**kwargs)
        self.clip_norm = clip_norm

    def _all_reduce_sum_gradients(self, grads_and_vars):
        summed = list(super()._all_reduce_sum_gradients(grads_and_vars))
        if self.clip_norm is None:
            return summed
        present = [i for i, (g, _) in enumerate(summed) if g is not None]
        clipped, _ = tf.clip_by_global_norm([summed[i][0] for i in present], self.clip_norm)
        for i, g in zip(present, clipped):
            summed[i] = (g, summed[i][1])
        return summed

    def update_step(self, gradient, variable, learning_rate):
        """torch.optim.AdamW's step (weight decay is applied before it, by Keras, as torch does)."""
        if self.amsgrad:
            raise ValueError("hit.train.optimizers.AdamW does not implement amsgrad")
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        first_correction = 1 - ops.power(ops.cast(self.beta_1, variable.dtype), step)
        second_correction = 1 - ops.power(ops.cast(self.beta_2, variable.dtype), step)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, (gradient - m) * (1 - self.beta_1))
        self.assign_add(v, (ops.square(gradient) - v) * (1 - self.beta_2))
        denominator = ops.sqrt(v) / ops.sqrt(second_correction) + self.epsilon
        self.assign_sub(variable, (lr / first_correction) * m / denominator)

    def get_config(self):
        return {**super().get_config(), "clip_norm": self.clip_norm}
