"""Restoring runs: what a run's directory trained, its latest checkpoint, and its models with their weights.

A run's model_dir holds ckpt-N (every model by variable path, hit.train.checkpoints) and config.gin (the
parsed gin config), which names the generator preset and its overrides (a GANTask run), a GATTask's settings, or
the autoencoder's (a VQHiTTask run: load_autoencoder; run_kind tells them apart). A GAT generator comes back as a
hit.models.samples.Decoded generator, whose latents are decoded into images.
"""

import inspect
import os

import gin
import tensorflow as tf

from hit.core.errors import one_line
from hit.data.pipeline import DataSource
from hit.models.presets import get_generator, get_vqhit
from hit.tasks.gan import GANTask
from hit.tasks.gat import GATTask
from hit.tasks.vqhit import VQHiTTask
from hit.train import trainer  # noqa: F401 (registers Trainer: its `task` binding says what a run trained)
from hit.train.checkpoints import (DamagedCheckpointError, check_model_variables, latest_checkpoint, make_checkpoint,
                                  restore)

GENERATORS = ("ema_generator", "generator")


def _read_run_config(model_dir, what, read):
    """read() while the run's config.gin is parsed; `what` it reads names it in error messages.

    hit.configs.parse_gin is not used: it refuses unknown keys and finalizes gin, while a run's config.gin is read
    leniently (bindings of unknown configurables are skipped). Clears gin.
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
        kind = {GANTask: "gan", GATTask: "gat", VQHiTTask: "vqhit"}.get(task.configurable.wrapped)
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
    return _read_run_config(model_dir, "the GAT task", lambda: GATTask(**overrides))


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
                        inspect.signature(VQHiTTask).parameters["model_preset"].default)
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
    """The VQ-HiT autoencoder (hit.models.vq_hit.VQHiT) a VQHiTTask run trained, with the checkpoint's "model" restored.

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
    return _read_run_config(model_dir, "the data source", lambda: DataSource(**overrides))
