"""The pre-norm residual block of Appendix A.1, eq. (1).

    y = x + Attention(norm(x))        (skipped when the block has no attention: an MLP-only block)
    x = y + MLP(norm(y))

The paper writes LN; HiT replaces it with BatchNorm (Appendix A.1, Table 8), which is our default.
"""

import keras

from hit.layers.attention import CrossAttention
from hit.layers.mlp import MLP
from hit.layers.normalization import Norm


class TransformerBlock(keras.layers.Layer):
    """attention: None (MLP only, the high-resolution stages), a MultiAxisAttention or a CrossAttention;
    norm: a hit.layers.normalization.Norm (BatchNorm by default)."""

    def __init__(self, channels, attention=None, norm=Norm(), mlp_ratio=4, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.attention = attention
        if attention is not None:
            self.attention_norm = norm.make("attention_norm")
        self.mlp_norm = norm.make("mlp_norm")
        self.mlp = MLP(channels, ratio=mlp_ratio, name="mlp")

    def call(self, x, tokens=None, training=None):
        if self.attention is not None:
            normed = self.attention_norm(x, training=training)
            if isinstance(self.attention, CrossAttention):
                # Only the query side is normalised; the tokens already were (hit-gan
                # models/generators.py `Block`).
                x = x + self.attention(normed, tokens)
            else:
                x = x + self.attention(normed)
        return self.mlp(self.mlp_norm(x, training=training), residual=x)  # x + MLP(norm(x)), fused
