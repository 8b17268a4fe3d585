"""Keras layers of HiT, one paper concept per module (see DESIGN.md)."""

from hit.layers.attention import CrossAttention, MultiAxisAttention
from hit.layers.blocking import block_images, unblock_images
from hit.layers.embeddings import InitialFeatureMap, LatentEmbedding, PositionEmbedding
from hit.layers.mlp import MLP
from hit.layers.normalization import make_norm
from hit.layers.transformer_block import TransformerBlock
from hit.layers.upsampling import PixelShuffle, SkipToRGB

__all__ = [
    "CrossAttention",
    "InitialFeatureMap",
    "LatentEmbedding",
    "MLP",
    "MultiAxisAttention",
    "PixelShuffle",
    "PositionEmbedding",
    "SkipToRGB",
    "TransformerBlock",
    "block_images",
    "make_norm",
    "unblock_images",
]
