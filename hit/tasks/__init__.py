"""Tasks: each builds its models and optimizers and defines one train step (DESIGN.md)."""

from hit.tasks.gan import GANTask
from hit.tasks.gat import GATTask
from hit.tasks.vqhit import VQHiTTask

__all__ = ["GANTask", "GATTask", "VQHiTTask"]
