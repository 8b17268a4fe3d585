"""Models: the HiT generator and its presets."""

from hit.models.hit_generator import HiTGenerator
from hit.models.presets import GENERATOR_PRESETS, get_generator

__all__ = ["GENERATOR_PRESETS", "HiTGenerator", "get_generator"]
