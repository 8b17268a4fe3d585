"""The training loop, generic over tasks, and the distribution strategy it runs under."""
