"""What a run shows: TensorBoard scalars, sample grids and the gin config (also written as files)."""

import os

import gin
import tensorflow as tf

from hit.core.images import image_grid, to_uint8, write_png


def write_scalars(writer, step, scalars):
    with writer.as_default(step=step):
        for name, value in scalars.items():
            tf.summary.scalar(name, value)
    writer.flush()


def write_image_grid(writer, step, name, images, png_path):
    """One grid of [-1, 1] images to TensorBoard and to `png_path` (and `latest.png` beside it)."""
    grid = image_grid(to_uint8(images).numpy())
    with writer.as_default(step=step):
        tf.summary.image(name, grid[None])
    write_png(png_path, images)
    write_png(os.path.join(os.path.dirname(png_path), "latest.png"), images)
    writer.flush()


def write_config(writer, model_dir, step, operative):
    """The parsed gin config at start (config.gin) and, once used, the operative one (operative_config.gin)."""
    text = gin.operative_config_str() if operative else gin.config_str()
    name = "operative_config" if operative else "config"
    with tf.io.gfile.GFile(os.path.join(model_dir, f"{name}.gin"), "w") as f:
        f.write(text)
    with writer.as_default(step=step):
        tf.summary.text(f"gin/{name}", "\n".join("    " + line for line in text.splitlines()))
    writer.flush()
