"""Latents -> a PNG grid through the SD-VAE (as official GAT generate.py: decoded latent -> (x + 1) / 2,
clipped, uint8).

    python tools/decode_latents.py --vae_weights=sd-vae-ft-mse.safetensors --latents=latents/imagenet256 \\
        --num_images=64 --output=reconstructions.png
    python tools/decode_latents.py --vae_weights=sd-vae-ft-ema.safetensors --latents=samples.npy --output=grid.png

--latents is a latent data set of tools/extract_latents.py (its first images' posterior means, in order: the
VAE's reconstructions; the set's scale factor must be the VAE's) or a .npy of scaled latents [N, h, w, c]
(already multiplied by the VAE's scale factor, 0.18215 for SD's, as generators of the latent space produce
them). A VAE file of tools/train_demo_vae.py records its options and scale factor: no --vae_config needed.
"""

import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

import hit  # noqa: E402,F401  (before TensorFlow: it sets TensorFlow's environment, see hit/__init__.py)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from hit.core.console import keep_project_lines  # noqa: E402
from hit.core.errors import one_line  # noqa: E402
from hit.core.images import write_png  # noqa: E402
from hit.data import latents  # noqa: E402
from hit.models.weights.sd_vae_torch import load_sd_vae  # noqa: E402

BATCH_SIZE = 16  # latents per decoder call

_VAE = flags.DEFINE_string("vae_weights", None, "SD-VAE .safetensors (ldm or diffusers naming, or save_sd_vae's).")
_VAE_CONFIG = flags.DEFINE_string("vae_config", "{}", "JSON of SDVAE options overriding the file's (SD's: none).")
_LATENTS = flags.DEFINE_string("latents", None, "A latent data set folder, or a .npy of scaled latents [N, h, w, c].")
_NUM = flags.DEFINE_integer("num_images", 64, "Decode the first N latents.")
_COLUMNS = flags.DEFINE_integer("columns", None, "Grid columns (default: about the square root of N).")
_OUTPUT = flags.DEFINE_string("output", None, "The PNG grid to write.")


def read_latents(path, num, channels, scale_factor):
    """The first `num` scaled latents [n, h, w, channels] of a data set folder (whose scale factor must be
    `scale_factor`, the VAE's) or a .npy file."""
    if tf.io.gfile.isdir(path):
        found = latents.scale_factor(latents.read_metadata(path), path)
        if not math.isclose(found, scale_factor, rel_tol=1e-6):
            raise ValueError(f"the latent data set {path} is scaled by {found}, the VAE decodes latents scaled by "
                             f"{scale_factor}; decode it with the VAE that made it")
        batches = latents.eval_dataset(path, BATCH_SIZE, num, with_labels=False)
        found = np.concatenate([b["latent"].numpy() for b in batches])
    else:
        try:
            found = np.load(path, allow_pickle=False)[:num]
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read --latents {path}: {one_line(e)}") from None
    if found.ndim != 4 or found.shape[-1] != channels or not len(found):
        raise ValueError(f"{path} holds latents of shape {list(found.shape)}; the VAE decodes [N, h, w, {channels}]")
    return found.astype(np.float32)


def decode(vae, scaled):
    """Scaled latents -> images in [-1, 1] (the write clips), decoded in batches."""
    return np.concatenate([vae.decode(tf.constant(scaled[i:i + BATCH_SIZE])).numpy()
                           for i in range(0, len(scaled), BATCH_SIZE)])


def main(argv):
    keep_project_lines()
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    missing = [f"--{f.name}" for f in (_VAE, _LATENTS, _OUTPUT) if not f.value]
    if missing:
        sys.exit(f"error: {', '.join(missing)} required")
    if _NUM.value < 1:
        sys.exit("error: --num_images must be positive")
    try:
        config = json.loads(_VAE_CONFIG.value)
        vae = load_sd_vae(_VAE.value, **config)
        scaled = read_latents(_LATENTS.value, _NUM.value, vae.latent_channels, vae.scale_factor)
        write_png(_OUTPUT.value, decode(vae, scaled), _COLUMNS.value)
        print(f"wrote {len(scaled)} decoded images of {list(scaled.shape[1:])} latents to {_OUTPUT.value}")
    except json.JSONDecodeError as e:
        sys.exit(f"error: --vae_config is not valid JSON: {e.msg}")
    except (ValueError, OSError, tf.errors.OpError) as e:
        sys.exit(f"error: {one_line(e)}")


if __name__ == "__main__":
    app.run(main)
