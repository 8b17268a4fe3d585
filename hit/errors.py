"""Errors users read: one line each (DEVELOPERS.md)."""


def one_line(error):
    """An exception's message on one line (gin and TensorFlow add context lines), parts joined by " | "."""
    return " | ".join(line.strip() for line in str(error).splitlines() if line.strip())
