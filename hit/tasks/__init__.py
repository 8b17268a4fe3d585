"""Tasks: each builds its models and optimizers and defines one train step (DESIGN.md)."""
