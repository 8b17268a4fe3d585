"""Upsampling between stages (pixel shuffle, Sec. 4.2) and the skip-to-RGB image path (Alg. 1)."""

import keras
import tensorflow as tf

from hit.layers.initializers import trunc_normal
from hit.layers.normalization import Norm


class PixelShuffle(keras.layers.Layer):
    """X_{l+1} = Linear(PixelShuffle_{2x2}(X_l)): depth_to_space(2) gives (2H, 2W, C/4), then a Dense to
    the next stage's width (Alg. 1, A.3). The Dense is left out only when C/4 already is that width, as in
    the official code (hit-gan models/layers.py `PixelShuffle`); no shipped configuration does so."""

    def __init__(self, in_channels, out_channels, **kwargs):
        super().__init__(**kwargs)
        if in_channels % 4:
            raise ValueError(f"{self.name}: pixel shuffle needs channels divisible by 4, got {in_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.dense = None
        if in_channels // 4 != out_channels:
            self.dense = keras.layers.Dense(out_channels, kernel_initializer=trunc_normal(), name="dense")

    def call(self, x):
        x = tf.nn.depth_to_space(x, 2)
        return x if self.dense is None else self.dense(x)

    def get_config(self):
        return {**super().get_config(), "in_channels": self.in_channels, "out_channels": self.out_channels}


class SkipToRGB(keras.layers.Layer):
    """I <- UpSampleNN_{2x2}(I) + RGB(X_l) (Alg. 1), RGB = Dense(norm(X_l)) as in the official code.

    No output activation: the generator returns unbounded values and samplers clip to [-1, 1], as
    hit-gan trainers/gan_trainer.py clips only its evaluation samples.
    """

    def __init__(self, output_channels=3, norm=Norm(), **kwargs):
        super().__init__(**kwargs)
        self.output_channels = output_channels
        self.norm = norm.make("norm")
        self.dense = keras.layers.Dense(output_channels, kernel_initializer=trunc_normal(), name="dense")

    def call(self, x, image=None, training=None):
        rgb = self.dense(self.norm(x, training=training))
        if image is None:
            return rgb
        return rgb + tf.repeat(tf.repeat(image, 2, axis=1), 2, axis=2)  # nearest-neighbour x2

    def get_config(self):
        return {**super().get_config(), "output_channels": self.output_channels}
