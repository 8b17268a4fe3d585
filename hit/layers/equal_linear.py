"""EqualLinear: a linear layer with a learning-rate multiplier, StyleGAN-style (official GAT
models/custom_layers.py `EqualLinear`).

    y = x @ (lr * W) + lr * b,   W initialised xavier-uniform with gain 1 / lr, b with 0

The multiplier acts in `call()`, so the gradient of the stored W and b carries the factor lr too: with Adam (whose
step does not depend on the gradient's scale) the effective weight lr * W moves lr times as fast as a plain
Linear's would, while the gain-1/lr init makes lr * W start as a plain xavier-initialised weight. A separate
optimizer learning rate cannot reproduce this. GAT uses lr = 0.01 in G's mapping network
and D's class-embedding MLP.
"""

import keras


class EqualLinear(keras.layers.Layer):
    """Linear in_features -> units with weight `kernel` [in, units] and `bias` [units], both scaled by lr_multiplier."""

    def __init__(self, units, lr_multiplier=1.0, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        if units < 1 or not lr_multiplier > 0:
            raise ValueError(f"{self.name}: EqualLinear needs units >= 1 and lr_multiplier > 0, got {units}, "
                             f"{lr_multiplier}")
        self.units, self.lr_multiplier, self.use_bias = units, float(lr_multiplier), use_bias

    def build(self, input_shape):
        # xavier_uniform_(gain=g): U(+-g * sqrt(6 / (fan_in + fan_out))) is VarianceScaling(g^2, fan_avg, uniform).
        init = keras.initializers.VarianceScaling(self.lr_multiplier ** -2, mode="fan_avg", distribution="uniform")
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units), initializer=init)
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros") if self.use_bias else None

    def call(self, x):
        y = keras.ops.matmul(x, self.kernel * self.lr_multiplier)
        return y if self.bias is None else y + self.bias * self.lr_multiplier

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "lr_multiplier": self.lr_multiplier,
                "use_bias": self.use_bias}
