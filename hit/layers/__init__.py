"""Keras layers of HiT, one paper concept per module (see docs/architecture.md)."""
