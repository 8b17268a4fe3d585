"""Samples of a trained run's generator: a PNG grid, a folder of PNGs (for FID tools) or interpolations.

    python tools/sample.py --model_dir=runs/demo                       # -> runs/demo/samples/grid.png
    python tools/sample.py --model_dir=runs/demo --mode=folder --num_samples=50000 --output=runs/demo/fid
    python tools/sample.py --checkpoint=runs/demo/ckpt-400 --mode=interpolation --output=lerp.png

The generator and its preset come from the run (config.gin and the latest checkpoint, or --checkpoint);
--which=generator takes the raw weights instead of the EMA ones. Without --model_dir or --checkpoint it
samples a freshly initialised --preset (a smoke test of the whole model):
    python tools/sample.py --preset=hit_tiny_32                       # -> runs/fresh_hit_tiny_32/samples/grid.png
--output defaults to <run>/samples/grid.png, <run>/samples/interpolation.png or the folder <run>/samples/folder/
(by --mode), where <run> is --model_dir, the checkpoint's directory, or runs/fresh_<preset> for fresh weights.
Samples are G(z, training=False) with z ~ N(0, I) from --seed, clipped to [-1, 1] (hit.inference.sampling); the log
shows their count, rate and ETA (hit.core.progress).
Interpolations (paper Figure 7) are one row per strip between two samples of the seed, spherical by
default (--interpolation=lerp: linear).
A GAT run is class-conditional: --label=K samples class K (default: every class in turn, so a grid with as many
columns as classes holds one class per column; strip i of an interpolation keeps class i), --psi sets the
truncation toward the class's mean w (0: none; the official generate.py uses 0.3), and its latents are decoded
by the run's GATTask.vae_weights or --vae_weights (e.g. sd-vae-ft-ema, the official generate.py's VAE):
    python tools/sample.py --model_dir=runs/gat_demo --num_samples=100     # a 10 x 10 grid, class k in column k
    python tools/sample.py --model_dir=RUN --label=207 --psi=0.3 --vae_weights=weights/sd-vae-ft-ema.safetensors
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

import hit  # noqa: E402,F401  (before TensorFlow: it sets TensorFlow's environment, see hit/__init__.py)
import tensorflow as tf  # noqa: E402
from hit.core.console import keep_project_lines  # noqa: E402
from hit.core.errors import one_line  # noqa: E402
from hit.core.images import write_png  # noqa: E402
from hit.core.progress import Progress  # noqa: E402
from hit.inference import runs, sampling  # noqa: E402
from hit.models.samples import is_conditional  # noqa: E402

MODES = ("grid", "folder", "interpolation")
DEFAULT_OUTPUTS = {"grid": "grid.png", "folder": "folder", "interpolation": "interpolation.png"}  # in <run>/samples

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A training run: config.gin and checkpoints.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A checkpoint prefix, e.g. <model_dir>/ckpt-400 "
                                  "(default: the latest in --model_dir).")
_WHICH = flags.DEFINE_string("which", "ema_generator", "ema_generator or generator (the raw weights).")
_PRESET = flags.DEFINE_string("preset", "hit_tiny_32", "Without --model_dir / --checkpoint: the preset to "
                              "sample with fresh weights.")
_MODE = flags.DEFINE_string("mode", "grid", f"One of {', '.join(MODES)}.")
_OUTPUT = flags.DEFINE_string("output", None, "PNG file (grid, interpolation) or folder (folder); default: "
                              "<run>/samples/grid.png, interpolation.png or folder/ (see the module docstring).")
_NUM = flags.DEFINE_integer("num_samples", 64, "Samples in the grid or the folder.")
_STRIPS = flags.DEFINE_integer("num_strips", 8, "Interpolation strips (rows).")
_STEPS = flags.DEFINE_integer("steps", 10, "Images per interpolation strip, end points included.")
_INTERPOLATION = flags.DEFINE_string("interpolation", "slerp", "slerp (spherical) or lerp (linear) latents.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the latent codes (and of fresh weights).")
_LABEL = flags.DEFINE_integer("label", None, "Class-conditional runs (GAT): this class (default: every class in turn).")
_PSI = flags.DEFINE_float("psi", 0.0, "Class-conditional runs (GAT): truncation toward the class's mean w (0: none).")
_VAE = flags.DEFINE_string("vae_weights", None, "GAT runs: the SD-VAE that decodes (default: the run's).")


def default_output(mode, model_dir, checkpoint, preset):
    """--output's default: <run>/samples/<DEFAULT_OUTPUTS[mode]>, <run> being model_dir, else the checkpoint's
    directory, else runs/fresh_<preset> (fresh weights; runs/ is git-ignored)."""
    run = model_dir or (os.path.dirname(checkpoint) if checkpoint else os.path.join("runs", f"fresh_{preset}"))
    return os.path.join(run, "samples", DEFAULT_OUTPUTS[mode])


def write(generator, output):
    """Write the --mode output, logging progress (count, rate, ETA) per batch; returns a description for the log."""
    total = _STRIPS.value * _STEPS.value if _MODE.value == "interpolation" else _NUM.value
    progress = Progress("sampling", total)
    conditional = dict(label=_LABEL.value, truncation_psi=_PSI.value)
    if _MODE.value == "grid":
        columns = generator.num_classes if is_conditional(generator) and _LABEL.value is None else None
        write_png(output, sampling.sample(generator, _NUM.value, _SEED.value, progress, **conditional), columns)
        description = f"a grid of {_NUM.value} samples"
    elif _MODE.value == "folder":
        start = 0
        for images in sampling.sample_batches(generator, _NUM.value, _SEED.value, progress, **conditional):
            start += len(sampling.write_individual_pngs(images, output, start))
        description = f"{start} PNGs"
    else:
        strips = sampling.interpolate(generator, _STRIPS.value, _STEPS.value, _SEED.value, _INTERPOLATION.value,
                                      progress, **conditional)
        write_png(output, tf.reshape(strips, [-1, *strips.shape[2:]]), columns=_STEPS.value)
        description = f"{_STRIPS.value} interpolation strips of {_STEPS.value} steps"
    progress.done()
    return description


def main(argv):
    keep_project_lines()
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    if _MODE.value not in MODES:
        sys.exit(f"error: --mode must be one of {', '.join(MODES)}, got {_MODE.value!r}")
    if _NUM.value < 1 or _STRIPS.value < 1 or _STEPS.value < 2:
        sys.exit("error: --num_samples and --num_strips must be positive and --steps at least 2")
    if _INTERPOLATION.value not in sampling.INTERPOLATIONS:
        sys.exit(f"error: --interpolation must be one of {', '.join(sampling.INTERPOLATIONS)}, "
                 f"got {_INTERPOLATION.value!r}")
    from_run = bool(_MODEL_DIR.value or _CHECKPOINT.value)
    if from_run and flags.FLAGS["preset"].present:
        sys.exit("error: --preset is for fresh weights only; a run's config.gin names its generator")
    tf.keras.utils.set_random_seed(_SEED.value)
    try:
        generator = runs.load_generator(_MODEL_DIR.value, _CHECKPOINT.value, _WHICH.value,
                                            None if from_run else _PRESET.value, vae_weights=_VAE.value)
        sampling.check_label(generator, _LABEL.value)
        if _PSI.value and not is_conditional(generator):
            raise ValueError("--psi is for class-conditional runs (GAT); this generator has no class means")
    except ValueError as e:
        sys.exit(f"error: {e}")
    output = _OUTPUT.value or default_output(_MODE.value, _MODEL_DIR.value, _CHECKPOINT.value, _PRESET.value)
    try:
        description = write(generator, output)
    except (OSError, tf.errors.OpError) as e:  # a full disk, a read-only or missing folder
        sys.exit(f"error: cannot write {output}: {one_line(e)}")
    logging.info("wrote %s to %s", description, output)
    print(output)


if __name__ == "__main__":
    app.run(main)
