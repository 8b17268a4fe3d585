"""Samples of a trained generator: restore it from a run, draw images, interpolate latents, write PNGs.

A run's model_dir holds ckpt-N (every model by variable path, hit.train.checkpoints) and config.gin (the
parsed gin config), which names the generator preset and its overrides (a GANTask run), a GATTask's settings, or
the autoencoder's (a VQHiTTask run: load_autoencoder; run_kind tells them apart). Samples are G(z, training=False)
with z ~ N(0, I) drawn statelessly from a seed, clipped to [-1, 1]; no truncation for HiT (the paper uses none).
A GAT generator is class-conditional (a label, or every class in turn), takes a truncation psi, and its latents
are decoded (the `Decoded` wrapper).
"""

import inspect
import os

import gin
import numpy as np
import tensorflow as tf

from hit import data, tasks, train  # noqa: F401  (registers the configurables config.gin binds)
from hit.errors import one_line
from hit.images import to_uint8
from hit.models import get_generator, get_vqhit
from hit.train.checkpoints import (DamagedCheckpointError, check_model_variables, latest_checkpoint, make_checkpoint,
                                  restore)

GENERATORS = ("ema_generator", "generator")
INTERPOLATIONS = ("slerp", "lerp")
BATCH_SIZE = 64  # latents per generator call, so that large sample counts fit in memory


def _read_run_config(model_dir, what, read):
    """read() while the run's config.gin is parsed; `what` it reads names it in error messages.

    hit.main.parse_gin is not used: importing hit.main defines its flags (--model_dir, --mode), which would
    clash with a tool's own. Bindings of configurables not imported here are skipped. Clears gin.
    """
    path = os.path.join(model_dir, "config.gin")
    if not tf.io.gfile.exists(path):
        raise ValueError(f"no config.gin in {model_dir}: cannot tell what the run trained")
    gin.clear_config()
    try:
        gin.parse_config_files_and_bindings([path], [], finalize_config=False, skip_unknown=True)
        return read()
    except (ValueError, SyntaxError, OSError) as e:
        raise ValueError(f"cannot read {what} from {path}: {one_line(e)}") from None
    finally:
        gin.clear_config()


def _query(name, default=None):
    """A gin binding of the parsed config, or `default` when it is unbound."""
    try:
        return gin.query_parameter(name)
    except ValueError:
        return default


def _kind():
    """What the parsed config trained, "gan", "gat" or "vqhit": Trainer.task's class, else the one task preset
    bound."""
    task = _query("hit.train.Trainer.task")
    if task is not None:
        kind = {tasks.GANTask: "gan", tasks.GATTask: "gat", tasks.VQHiTTask: "vqhit"}.get(task.configurable.wrapped)
        if kind is None:
            raise ValueError(f"Trainer.task is {task}, not GANTask, GATTask or VQHiTTask")
        return kind
    kinds = [kind for kind, name in (("gan", "hit.tasks.GANTask.generator_preset"),
                                     ("gat", "hit.tasks.GATTask.generator_preset"),
                                     ("vqhit", "hit.tasks.VQHiTTask.model_preset")) if _query(name) is not None]
    if len(kinds) != 1:
        raise ValueError("it binds neither Trainer.task nor exactly one of GANTask.generator_preset, "
                         "GATTask.generator_preset and VQHiTTask.model_preset")
    return kinds[0]


def run_kind(model_dir):
    """What a run trained, from its config.gin: "gan" (GANTask), "gat" (GATTask) or "vqhit" (VQHiTTask). Clears
    gin."""
    return _read_run_config(model_dir, "what the run trained", _kind)


def _check_kind(model_dir, kinds):
    found = run_kind(model_dir)
    if found not in kinds:
        names = {"gan": "a GAN (GANTask)", "gat": "a GAT (GATTask)", "vqhit": "a VQ-HiT autoencoder (VQHiTTask)"}
        raise ValueError(f"{model_dir} trained {names[found]}, not {' or '.join(names[k] for k in kinds)}")
    return found


def _run_gat_task(model_dir, **overrides):
    """The GATTask (not built) a run's config.gin configures, with `overrides`. Clears gin."""
    return _read_run_config(model_dir, "the GAT task", lambda: tasks.GATTask(**overrides))


def _run_generator_config(model_dir):
    """(preset, overrides) of the generator a run trained, from its config.gin. Clears gin."""
    def read():
        return (gin.query_parameter("hit.tasks.GANTask.generator_preset"),
                dict(_query("hit.tasks.GANTask.generator_overrides") or {}))
    return _read_run_config(model_dir, "the generator", read)


def _run_autoencoder_config(model_dir):
    """(preset, overrides) of the VQ-HiT a run trained, as VQHiTTask builds it (its defaults where config.gin
    binds nothing). Clears gin."""
    def read():
        overrides = dict(_query("hit.tasks.VQHiTTask.model_overrides") or {})
        if _query("hit.tasks.VQHiTTask.bn_group_size") is not None:
            overrides["bn_group_size"] = _query("hit.tasks.VQHiTTask.bn_group_size")
        preset = _query("hit.tasks.VQHiTTask.model_preset",
                        inspect.signature(tasks.VQHiTTask).parameters["model_preset"].default)
        return preset, overrides
    return _read_run_config(model_dir, "the autoencoder", read)


def _restore(model, path, which, role="generator"):
    """Restore `which` from checkpoint `path` into `model` (the run's `role`), checking first that the checkpoint
    holds exactly its variables (hit.train.checkpoints.check_model_variables)."""
    check_model_variables(path, which, model, f"run's {role}")
    try:
        restore(make_checkpoint({which: model}), path).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:  # a variable missing, or saved with another shape
        if isinstance(e, DamagedCheckpointError):
            raise
        raise ValueError(f"cannot restore {which} from {path}: {one_line(e)[:500]}") from None


def run_checkpoint(model_dir=None, checkpoint=None):
    """(model_dir, checkpoint prefix): the checkpoint given (its directory the model_dir unless one is given), or
    the latest in model_dir. One-line errors when there is none."""
    if checkpoint:
        if not tf.io.gfile.exists(checkpoint + ".index"):
            raise ValueError(f"no checkpoint at {checkpoint} (expected a prefix such as <model_dir>/ckpt-400)")
        return model_dir or os.path.dirname(checkpoint), checkpoint
    latest = latest_checkpoint(model_dir)
    if not latest:
        raise ValueError(f"no checkpoint found in {model_dir}")
    return model_dir, latest


def load_generator(model_dir=None, checkpoint=None, which="ema_generator", preset=None, vae_weights=None):
    """The generator a run trained, with its weights restored; for a GAT run a `Decoded` generator whose images
    go through the run's GATTask.vae_weights (or `vae_weights`; none: pixel space).

    model_dir: the run's directory (config.gin, and the latest checkpoint unless `checkpoint` is given).
    checkpoint: a checkpoint prefix such as <model_dir>/ckpt-400 (its directory is the model_dir if none is
    given). which: "ema_generator" (what the paper evaluates) or "generator" (the raw weights).
    preset: with neither model_dir nor checkpoint, a freshly initialised generator of this preset (a smoke
    test of the model; seed it with keras.utils.set_random_seed).
    Raises a one-line ValueError for a missing checkpoint or config.gin, a VQ-HiT run, or an incomplete restore.
    Reading config.gin clears the global gin config (before and after).
    """
    if which not in GENERATORS:
        raise ValueError(f"which must be one of {', '.join(GENERATORS)}, got {which!r}")
    if not model_dir and not checkpoint:
        if not preset:
            raise ValueError("give a model_dir or checkpoint to restore, or a preset for fresh weights")
        return get_generator(preset)
    model_dir, checkpoint = run_checkpoint(model_dir, checkpoint)
    if _check_kind(model_dir, ("gan", "gat")) == "gat":
        task = _run_gat_task(model_dir, **({"vae_weights": vae_weights} if vae_weights else {}))
        _, generator = task.eval_generator()
        _restore(generator.model, checkpoint, which)
        return generator
    preset, overrides = _run_generator_config(model_dir)
    generator = get_generator(preset, **overrides)
    _restore(generator, checkpoint, which)
    return generator


def load_autoencoder(model_dir=None, checkpoint=None, preset=None):
    """The VQ-HiT autoencoder (hit.models.VQHiT) a VQHiTTask run trained, with the checkpoint's "model" restored.

    model_dir / checkpoint: as load_generator's. preset: with neither, a freshly initialised VQ-HiT of this preset.
    Raises a one-line ValueError for a missing checkpoint or config.gin, a GAN run, or an incomplete restore.
    Reading config.gin clears the global gin config (before and after).
    """
    if not model_dir and not checkpoint:
        if not preset:
            raise ValueError("give a model_dir or checkpoint to restore, or a preset for fresh weights")
        return get_vqhit(preset)
    model_dir, checkpoint = run_checkpoint(model_dir, checkpoint)
    _check_kind(model_dir, ("vqhit",))
    preset, overrides = _run_autoencoder_config(model_dir)
    model = get_vqhit(preset, **overrides)
    _restore(model, checkpoint, "model", role="autoencoder")
    return model


def run_data_source(model_dir, **overrides):
    """The hit.data.DataSource the run's config.gin configures, with `overrides` (e.g. resolution). Clears gin."""
    return _read_run_config(model_dir, "the data source", lambda: data.DataSource(**overrides))


def latents(latent_dim, num, seed=0):
    """[num, latent_dim] z ~ N(0, I), drawn statelessly from `seed`."""
    return tf.random.stateless_normal([num, latent_dim], seed=[seed, 0])


def is_conditional(generator):
    """A class-conditional generator (GAT) has num_classes and takes G(z, labels, truncation_psi=...)."""
    return getattr(generator, "num_classes", None) is not None


def class_labels(num_classes, num, start=0):
    """Every class in turn: [num] int32 labels start % K, (start + 1) % K, ... (balanced over a multiple of K)."""
    return tf.range(start, start + num) % num_classes


class Decoded:
    """A latent-space generator (GAT) as an image generator: images = decode(G(z, labels, truncation_psi)).

    `model` is the Keras generator, what checkpoints restore and exports capture; `decode` maps its output to
    images in [-1, 1] (the SD-VAE, or the identity for pixel-space runs); `decoder` names it in results;
    `decoder_model` is the Keras model decode runs (the SD-VAE), if any, for exports."""

    def __init__(self, model, decode, decoder, decoder_model=None):
        self.model, self.decode, self.decoder, self.decoder_model = model, decode, decoder, decoder_model
        self.latent_dim, self.num_classes = model.latent_dim, model.num_classes

    def __call__(self, z, labels, truncation_psi=0.0, training=False):
        return self.decode(self.model(z, labels, truncation_psi=truncation_psi, training=training))


def images(generator, z, labels=None, truncation_psi=0.0, start=0):
    """clip(G(z, training=False), -1, 1). A class-conditional generator gets `labels` (default: every class in
    turn, counting from position `start`) and the truncation psi (0: none)."""
    if not is_conditional(generator):
        return tf.clip_by_value(generator(z, training=False), -1.0, 1.0)
    if labels is None:
        labels = class_labels(generator.num_classes, int(z.shape[0]), start)
    return tf.clip_by_value(generator(z, labels, truncation_psi=truncation_psi, training=False), -1.0, 1.0)


def check_label(generator, label):
    """None, or a class index the generator has: a one-line error otherwise (also for unconditional ones)."""
    if label is None:
        return None
    if not is_conditional(generator):
        raise ValueError("this run's generator is unconditional: it takes no class label")
    if not 0 <= label < generator.num_classes:
        raise ValueError(f"class label {label} is outside [0, {generator.num_classes})")
    return label


def generate(generator, z, progress=None, label=None, truncation_psi=0.0):
    """Yield images(...) in batches of at most BATCH_SIZE latents; a conditional generator draws class `label`,
    or every class in turn when it is None.

    progress: None, or a hit.progress.Progress (anything with update(count)), told each batch's size once the
    caller has taken the batch and asks for the next one, so that its count is of images handled."""
    for start in range(0, int(z.shape[0]), BATCH_SIZE):
        batch = z[start:start + BATCH_SIZE]
        labels = None if label is None else tf.fill([int(batch.shape[0])], label)
        out = images(generator, batch, labels, truncation_psi, start)
        yield out
        if progress is not None:
            progress.update(len(out))


def sample_batches(generator, num, seed=0, progress=None, label=None, truncation_psi=0.0):
    """sample() in batches of at most BATCH_SIZE images, for writing more images than fit in memory."""
    if num < 1:
        raise ValueError(f"the number of samples must be positive, got {num}")
    return generate(generator, latents(generator.latent_dim, num, seed), progress, label, truncation_psi)


def sample(generator, num, seed=0, progress=None, label=None, truncation_psi=0.0):
    """[num, H, W, C] float images in [-1, 1] for the latents of `seed` (progress: as in generate; label and
    truncation_psi for class-conditional generators)."""
    return tf.concat(list(sample_batches(generator, num, seed, progress, label, truncation_psi)), axis=0)


def interpolation_latents(latent_dim, num_strips, steps, seed=0, mode="slerp"):
    """[num_strips, steps, latent_dim]: strip i goes from z_i to z_{num_strips + i} of latents(seed).

    So a strip's end points are samples of the same seed. "slerp" (default) follows the arc between the end
    points, sin((1-t)w)/sin(w) a + sin(tw)/sin(w) b with w the angle between them, which keeps Gaussian
    latents at a typical norm; "lerp" the straight line, whose middle is shorter than Gaussian latents are.
    """
    if mode not in INTERPOLATIONS:
        raise ValueError(f"mode must be one of {', '.join(INTERPOLATIONS)}, got {mode!r}")
    if num_strips < 1 or steps < 2:
        raise ValueError(f"need at least 1 strip and 2 steps, got {num_strips} strips and {steps} steps")
    z = latents(latent_dim, 2 * num_strips, seed).numpy().astype(np.float64)
    a, b = z[:num_strips, None], z[num_strips:, None]  # [strips, 1, latent]
    t = np.linspace(0.0, 1.0, steps)[None, :, None]  # [1, steps, 1]
    line = (1 - t) * a + t * b
    if mode == "lerp":
        return tf.constant(line, tf.float32)
    cos = np.sum(a * b, axis=-1, keepdims=True) / (np.linalg.norm(a, axis=-1, keepdims=True) *
                                                   np.linalg.norm(b, axis=-1, keepdims=True))
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    sin = np.sin(omega)
    safe = np.where(sin > 1e-6, sin, 1.0)
    arc = (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / safe
    return tf.constant(np.where(sin > 1e-6, arc, line), tf.float32)  # (anti)parallel end points: the line


def interpolate(generator, num_strips, steps, seed=0, mode="slerp", progress=None, label=None, truncation_psi=0.0):
    """[num_strips, steps, H, W, C] images in [-1, 1] along interpolation_latents (paper Figure 7; progress:
    as in generate). A class-conditional generator keeps one class along a strip: `label`, or strip i class i."""
    z = tf.reshape(interpolation_latents(generator.latent_dim, num_strips, steps, seed, mode), [num_strips * steps, -1])
    if is_conditional(generator):
        strips = tf.fill([num_strips], label) if label is not None else class_labels(generator.num_classes,
                                                                                     num_strips)
        labels = tf.repeat(strips, steps)
        batches = []
        for start in range(0, num_strips * steps, BATCH_SIZE):
            batches.append(images(generator, z[start:start + BATCH_SIZE], labels[start:start + BATCH_SIZE],
                                  truncation_psi))
            if progress is not None:
                progress.update(len(batches[-1]))
        out = tf.concat(batches, axis=0)
    else:
        out = tf.concat(list(generate(generator, z, progress)), axis=0)
    return tf.reshape(out, [num_strips, steps, *out.shape[1:]])


def write_individual_pngs(images, folder, start_index=0):
    """Write [-1, 1] images (N, H, W, C) as folder/000000.png, ... from start_index (for external FID tools);
    creates the folder. Returns the paths written."""
    tf.io.gfile.makedirs(folder)
    paths = []
    for i, image in enumerate(to_uint8(images)):
        path = os.path.join(folder, f"{start_index + i:06d}.png")
        tf.io.write_file(path, tf.io.encode_png(image))
        paths.append(path)
    return paths
