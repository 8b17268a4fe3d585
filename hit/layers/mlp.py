"""The two-layer feed-forward network of Appendix A.1 eq. (1)."""

import keras

from hit.layers.initializers import trunc_normal


def gelu_exact(x):
    return keras.ops.gelu(x, approximate=False)


class MLP(keras.layers.Layer):
    """Dense(C -> ratio*C, GELU) -> Dense(ratio*C -> C).

    The paper writes max(0, .) (ReLU) in eq. (1); the official generator passes the exact (erf) GELU,
    which we follow (facts 2.4). Dropout is 0 in every official run and is therefore left out.
    """

    def __init__(self, channels, ratio=4, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.ratio = ratio
        self.hidden = keras.layers.Dense(
            channels * ratio, activation=gelu_exact, kernel_initializer=trunc_normal(), name="hidden"
        )
        self.out = keras.layers.Dense(channels, kernel_initializer=trunc_normal(), name="out")

    def call(self, x):
        return self.out(self.hidden(x))

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "ratio": self.ratio}
