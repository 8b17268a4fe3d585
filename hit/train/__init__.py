"""The training loop, generic over tasks, and the distribution strategy it runs under."""

from hit.train.strategy import make_strategy
from hit.train.trainer import NonFiniteLossError, Trainer

__all__ = ["NonFiniteLossError", "Trainer", "make_strategy"]
