"""Tasks: each builds its models and optimizers and defines one train step (docs/architecture.md)."""
