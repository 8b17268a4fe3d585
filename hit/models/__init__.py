"""Models: the HiT generator, the StyleGAN2-like discriminator, VQ-HiT, GAT's generator and discriminator, the
ConvNet-R1 baseline generator, and their presets."""

from hit.models.convnet_generator import ConvNetGenerator
from hit.models.gat import GATDiscriminator, GATGenerator
from hit.models.hit_generator import HiTGenerator
from hit.models.presets import (CONVNET_PRESETS, DISCRIMINATOR_PRESETS, GAT_DISCRIMINATOR_PRESETS,
                                GAT_GENERATOR_PRESETS, GENERATOR_PRESETS, VQHIT_PRESETS, get_discriminator,
                                get_generator, get_vqhit)
from hit.models.stylegan_discriminator import StyleGANDiscriminator
from hit.models.vq_hit import HiTDecoder, VQHiT

__all__ = [
    "CONVNET_PRESETS",
    "ConvNetGenerator",
    "DISCRIMINATOR_PRESETS",
    "GATDiscriminator",
    "GATGenerator",
    "GAT_DISCRIMINATOR_PRESETS",
    "GAT_GENERATOR_PRESETS",
    "GENERATOR_PRESETS",
    "HiTDecoder",
    "HiTGenerator",
    "StyleGANDiscriminator",
    "VQHIT_PRESETS",
    "VQHiT",
    "get_discriminator",
    "get_generator",
    "get_vqhit",
]
