"""Resuming a run with the configuration it was started with.

Before a run in an existing --model_dir restores anything, the gin bindings it was started with (its config.gin)
are compared with the ones given now. A different model, task, recipe or data shape would otherwise be restored
into silently where its variables happen to match (a BatchNorm run resumed with LayerNorm dropped 52 tensors), or
fail deep inside the restore. What may change on resume is how long the run trains and how often it reports,
saves, samples and evaluates, and where its data lives (RESUMABLE); every other difference is one error line
naming the bindings. `Trainer.check_resumed_config = False` skips the check, for a deliberate change of recipe.
"""

import inspect
import os

import gin
from gin import config_parser
import tensorflow as tf

CONFIG_FILE = "config.gin"
# Bindings (configurable.parameter, or configurable.* for all of its parameters) a resumed run may change.
RESUMABLE = ("Trainer.train_steps", "Trainer.steps_per_loop", "Trainer.checkpoint_every", "Trainer.keep_checkpoints",
             "Trainer.sample_every", "Trainer.num_samples", "Trainer.eval_every", "Trainer.log_every",
             "Trainer.jit_compile", "Trainer.checkpoint_data_iterator", "Trainer.check_resumed_config",
             "DataSource.data_dir", "DataSource.manual_dir", "Evaluator.*")
_UNBOUND = "<unbound>"


class _Reference:
    """What the parser makes of @name / @name() and %macro: compared by their text."""

    def __init__(self, text):
        self.text = text

    def __eq__(self, other):
        return isinstance(other, _Reference) and self.text == other.text

    def __repr__(self):
        return self.text


class _Delegate(config_parser.ParserDelegate):
    def configurable_reference(self, scoped_configurable_name, evaluate):
        return _Reference(f"@{_short(scoped_configurable_name)}{'()' if evaluate else ''}")

    def macro(self, macro_name):
        return _Reference(f"%{macro_name}")


def _short(selector):
    """hit.train.Trainer -> Trainer (config files may name a configurable with or without its module)."""
    return selector.rsplit(".", 1)[-1]


def bindings(text):
    """{"Configurable.parameter": value} of a gin config text (config_str's format), scopes kept in the key."""
    out = {}
    for statement in config_parser.ConfigParser(text, _Delegate()):
        if isinstance(statement, config_parser.BindingStatement):
            scope = f"{statement.scope}/" if statement.scope else ""
            name = f"{scope}{_short(statement.selector)}.{statement.arg_name}" if statement.arg_name else \
                f"{scope}{statement.selector}"  # a macro definition
            out[name] = statement.value
    return out


def _default(key):
    """The default of an unbound parameter, from the registered configurable's signature (or _UNBOUND)."""
    selector, _, arg = key.rpartition(".")
    try:
        wrapped = gin.config._REGISTRY.get_match(selector.rsplit("/", 1)[-1]).wrapped  # noqa: SLF001 (gin 0.5)
        parameter = inspect.signature(wrapped).parameters.get(arg)
    except (KeyError, ValueError, TypeError, AttributeError):
        return _UNBOUND
    if parameter is None or parameter.default is inspect.Parameter.empty or parameter.default is gin.REQUIRED:
        return _UNBOUND
    return parameter.default


def _resumable(key):
    name = key.rsplit("/", 1)[-1]
    return name in RESUMABLE or f"{name.split('.', 1)[0]}.*" in RESUMABLE


def differences(saved_text, current_text):
    """[(key, saved value, current value)] of the bindings that differ and may not change on resume."""
    saved, current = bindings(saved_text), bindings(current_text)
    out = []
    for key in sorted(set(saved) | set(current)):
        if _resumable(key):
            continue
        before, now = saved.get(key, _default(key)), current.get(key, _default(key))
        if before != now:
            out.append((key, before, now))
    return out


def check_resumed_config(model_dir):
    """A one-line ValueError when the run in model_dir was started with bindings that differ from the current
    gin config in more than RESUMABLE allows. A run without config.gin is not checked."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        return
    with tf.io.gfile.GFile(path) as f:
        saved = f.read()
    found = differences(saved, gin.config_str())
    if found:
        listed = "; ".join(f"{key} = {before!r} there, {now!r} now" for key, before, now in found)
        raise ValueError(f"{model_dir} holds a run of another configuration ({listed}); resume it with the bindings "
                         f"of its {CONFIG_FILE}, or train this one in a new --model_dir (a resumed run may change "
                         "only its length, reporting, checkpoint, sample and evaluation settings and data paths; "
                         "Trainer.check_resumed_config = False resumes anyway)")
