"""Tasks: each builds its models and optimizers and defines one train step (DESIGN.md)."""

from hit.tasks.gan import GANTask

__all__ = ["GANTask"]
