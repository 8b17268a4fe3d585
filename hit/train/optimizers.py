"""AdamW with global-norm clipping of the gradient summed over replicas (official GAT train.py: clip 1.0, G and D).

Keras 3 clips (`global_clipnorm`) in `apply` before its TensorFlow backend sums the replicas' gradients, so under
a distribution strategy each replica's share is clipped on its own: a run on N replicas clips N partial
gradients instead of the batch's gradient, and differs from the same run on one device. Here the clip moves
after the sum, where a single device has it: the replicas' gradients are summed (as Keras does), the sum is
clipped to `clip_norm` by its global norm (tf.clip_by_global_norm), and the update proceeds. Keras' own
clipping options stay off.
"""

import keras
import tensorflow as tf


class AdamW(keras.optimizers.AdamW):
    """keras.optimizers.AdamW(**kwargs) plus clip_norm: the global norm bound of the replica-summed gradient."""

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

    def get_config(self):
        return {**super().get_config(), "clip_norm": self.clip_norm}
