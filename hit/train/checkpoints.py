"""What a checkpoint holds (every variable of every model, by path, plus the optimizers), where a run's
checkpoints are, and what to do when one is damaged.

Keras 3 keeps sub-layers held in Python lists (HiT's stages, D's blocks) in its own tracked lists, which
`tf.train.Checkpoint` does not follow: checkpointing a Keras 3 model object directly silently drops those
layers' variables (their trainable weights survive only through the optimizer, BatchNorm statistics and an
EMA model are lost). So each model is checkpointed as a flat mapping from variable path (below the model's
name) to variable, which is complete by construction and independent of attribute names.

A run's checkpoints are the `ckpt-<step>.index` files in its directory (`checkpoints_in`), not the entries of
TensorFlow's `checkpoint` state file: a checkpoint whose files were moved away is gone, and one the state file
names but whose files are missing is never taken for "no checkpoint" (which would start the run over). A
checkpoint that cannot be read (a truncated or missing `.data` file, a flipped bit: every tensor has a checksum)
is a one-line DamagedCheckpointError naming the file and the newest intact checkpoint to resume from.
"""

import os
import re

import keras
import tensorflow as tf

from hit.core.errors import tf_reason

_INDEX = re.compile(r"^ckpt-(\d+)\.index$")
_TEMPORARY = re.compile(r"^ckpt-\d+_temp")  # TensorFlow writes a checkpoint's shards here, then renames them


class DamagedCheckpointError(ValueError):
    """A checkpoint's files cannot be read; the message names the file and the newest intact checkpoint."""


def variables_by_path(model):
    """A trackable holding every variable of `model`, keyed by its path without the model's own name. Two
    variables with one key would lose one of them from every checkpoint: an error (a variable created outside
    the model's build, e.g. in a layer's __init__, has a path without the model's name)."""
    by_path = {}
    for variable in model.variables:
        key = variable.path.split("/", 1)[1]
        if key in by_path:
            raise ValueError(f"{model.name}: variables {by_path[key].path} and {variable.path} would share the "
                             f"checkpoint key {key!r}: create every variable in build()")
        by_path[key] = variable
    return tf.train.Checkpoint(**by_path)


def variable_key(item, variable):
    """The name of `variable` in a checkpoint of make_checkpoint({item: model}) ("/" and "." escaped as
    tf.train escapes them)."""
    name = variable.path.split("/", 1)[1].replace(".", "..").replace("/", ".S")
    return f"{item}/{name}/.ATTRIBUTES/VARIABLE_VALUE"


def checkpoint_step(path):
    """The step a checkpoint was saved at, from its prefix (<model_dir>/ckpt-<step>)."""
    return int(path.rsplit("-", 1)[1])


def make_checkpoint(items):
    """tf.train.Checkpoint of a task's items: Keras models by variable path, anything else as it is."""
    return tf.train.Checkpoint(**{
        name: variables_by_path(item) if isinstance(item, keras.layers.Layer) else item
        for name, item in items.items()
    })


def checkpoints_in(model_dir):
    """The checkpoint prefixes in model_dir (those with an index file), oldest first."""
    if not model_dir or not tf.io.gfile.isdir(model_dir):
        return []
    steps = sorted(int(m.group(1)) for m in map(_INDEX.match, tf.io.gfile.listdir(model_dir)) if m)
    return [os.path.join(model_dir, f"ckpt-{step}") for step in steps]


def latest_checkpoint(model_dir):
    """The newest checkpoint prefix in model_dir, or None."""
    found = checkpoints_in(model_dir)
    return found[-1] if found else None


def remove_leftovers(model_dir):
    """Delete the temporary directories of saves that never finished (a killed process, a full disk): they can
    be as large as a checkpoint. Returns their names. Only for the one process that saves into model_dir."""
    if not tf.io.gfile.isdir(model_dir):
        return []
    names = [name.rstrip("/") for name in tf.io.gfile.listdir(model_dir) if _TEMPORARY.match(name)]
    for name in names:
        path = os.path.join(model_dir, name)
        if tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
        else:
            tf.io.gfile.remove(path)
    return names


def damage(prefix):
    """Why the checkpoint at `prefix` cannot be read, naming the file; None when every tensor reads (each is
    checksummed, so this reads the whole checkpoint; a data iterator's state is not checked here)."""
    shards = sorted(tf.io.gfile.glob(prefix + ".data-*-of-*"))
    count = int(shards[0].rsplit("-of-", 1)[1]) if shards else 1
    for shard in (f"{prefix}.data-{i:05d}-of-{count:05d}" for i in range(count)):
        if shard not in shards:
            return f"{shard} is missing"
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as error:
        return f"{prefix}.index cannot be read ({tf_reason(error)})"
    for key, dtype in sorted(reader.get_variable_to_dtype_map().items()):
        if dtype == tf.variant:  # a data iterator's state: the reader cannot return it (restoring reads it)
            continue
        try:
            reader.get_tensor(key)
        except (IndexError, tf.errors.OpError) as error:  # a short file is an IndexError, a bad checksum DataLoss
            where = shards[0] if count == 1 else f"one of {prefix}.data-*-of-{count:05d}"
            return f"{where} is damaged ({tf_reason(error)}, reading {key})"
    return None


def damaged_error(prefix):
    """The DamagedCheckpointError for `prefix`, or None when it reads (the failure was something else)."""
    what = damage(prefix)
    if what is None:
        return None
    model_dir = os.path.dirname(prefix)
    older = [p for p in checkpoints_in(model_dir) if checkpoint_step(p) < checkpoint_step(prefix)]
    intact = next((p for p in reversed(older) if damage(p) is None), None)
    move = f"mkdir -p {os.path.join(model_dir, 'damaged')} && mv {prefix}.* {os.path.join(model_dir, 'damaged')}/"
    then = (f"the newest intact checkpoint is {intact}: to resume from it, move the damaged one away ({move}) and "
            "run the same command again" if intact else
            f"no older checkpoint is intact: move it away ({move}) to start over, or use another --model_dir")
    return DamagedCheckpointError(f"checkpoint {prefix} is damaged: {what}; {then}")


def restore(checkpoint, prefix):
    """checkpoint.restore(prefix), raising DamagedCheckpointError (one line) when its files cannot be read."""
    try:
        return checkpoint.restore(prefix)
    except (IndexError, tf.errors.OpError) as error:
        damaged = damaged_error(prefix)
        if damaged is None:
            raise
        raise damaged from error


def check_model_variables(prefix, item, model, role):
    """A one-line ValueError unless the checkpoint holds exactly `model`'s variables (names and shapes) under
    `item`. Checked from the index before restoring: a restore that fails half-way makes TensorFlow log every
    unrestored value (hundreds of lines) when the process exits. Keras models only (make_checkpoint saves
    anything else as it is)."""
    if not isinstance(model, keras.layers.Layer):
        return
    try:
        saved = {name: shape for name, shape in tf.train.list_variables(prefix)
                 if name.startswith(item + "/") and name.endswith("/.ATTRIBUTES/VARIABLE_VALUE")}
    except (tf.errors.OpError, ValueError):
        raise damaged_error(prefix) or ValueError(f"cannot read checkpoint {prefix}") from None
    if len(saved) != len(model.variables):
        raise ValueError(f"{prefix} holds {len(saved)} {item} variables but the {role} has {len(model.variables)}: "
                         "the checkpoint was saved from another model")
    for variable in model.variables:
        shape = saved.get(variable_key(item, variable))
        if shape != list(variable.shape):
            found = "no such variable" if shape is None else f"shape {shape}"
            raise ValueError(f"cannot restore {item} from {prefix}: the {role} has {variable.path} of shape "
                             f"{list(variable.shape)}, the checkpoint {found}")
