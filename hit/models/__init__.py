"""Models: the HiT generator, the StyleGAN2-like discriminator, and their presets."""

from hit.models.hit_generator import HiTGenerator
from hit.models.presets import DISCRIMINATOR_PRESETS, GENERATOR_PRESETS, get_discriminator, get_generator
from hit.models.stylegan_discriminator import StyleGANDiscriminator

__all__ = [
    "DISCRIMINATOR_PRESETS",
    "GENERATOR_PRESETS",
    "HiTGenerator",
    "StyleGANDiscriminator",
    "get_discriminator",
    "get_generator",
]
