"""Atomic file writes: a reader sees the old file or the new one, never a part (docs/architecture.md,
"Errors": a crash never loses data)."""

import os

import tensorflow as tf


def write_atomically(path, data):
    """Write to a temporary name, then rename over `path` (local disks and GCS): never a half-written file."""
    tf.io.gfile.makedirs(os.path.dirname(path))
    temporary = path + ".tmp"
    with tf.io.gfile.GFile(temporary, "wb") as f:
        f.write(data)
    tf.io.gfile.rename(temporary, path, overwrite=True)
