"""The check every loader of outside weights makes: each file tensor used exactly once, each of the right shape,
nothing assigned unless all of them fit; errors are one line naming the tensors."""

import numpy as np
import safetensors
import safetensors.numpy

LINEAR, CONV = (1, 0), (2, 3, 1, 0)  # PyTorch Linear [out, in] -> Keras [in, out]; Conv2d OIHW -> HWIO


def read_safetensors(path, what):
    """{name: array} of a .safetensors file; a one-line ValueError naming `what` and the file when it cannot be
    read (missing, not safetensors, bfloat16 tensors, which NumPy cannot hold)."""
    try:
        return safetensors.numpy.load_file(str(path))
    except Exception as error:  # noqa: BLE001 (every reason is one line here)
        message = " ".join(str(error).split())
        raise ValueError(f"cannot read {what} {path}: {type(error).__name__}: {message}") from error


def read_safetensors_metadata(path, what):
    """The string-to-string __metadata__ of a .safetensors file's header ({} when it has none); one-line errors as
    read_safetensors."""
    try:
        with safetensors.safe_open(str(path), "np") as f:
            return dict(f.metadata() or {})
    except Exception as error:  # noqa: BLE001 (every reason is one line here)
        message = " ".join(str(error).split())
        raise ValueError(f"cannot read {what} {path}: {type(error).__name__}: {message}") from error


def file_shape(variable, perm):
    """The shape a variable has in a file whose layout `perm` (or None: the same) turns into the variable's."""
    shape = tuple(variable.shape)
    return shape if perm is None else tuple(shape[i] for i in np.argsort(perm))


def listed(names, limit=5):
    """'a', 'b', ... (k more): the first `limit` names, sorted."""
    names = sorted(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def check_tensors(tensors, shapes, source, hint=""):
    """One-line ValueErrors, prefixed by `source`, unless `tensors` ({name: array}) holds exactly the names of
    `shapes` ({name: expected shape}) with those shapes. `hint` follows the unexpected-tensors message."""
    missing, extra = set(shapes) - set(tensors), set(tensors) - set(shapes)
    if missing:
        raise ValueError(f"{source}: missing {len(missing)} tensor(s): {listed(missing)}")
    if extra:
        raise ValueError(f"{source}: {len(extra)} unexpected tensor(s): {listed(extra)}{hint}")
    wrong = sorted(n for n, shape in shapes.items() if tuple(np.shape(tensors[n])) != tuple(shape))
    if wrong:
        details = "; ".join(f"{n!r} expected {tuple(shapes[n])}, got {tuple(np.shape(tensors[n]))}" for n in wrong[:3])
        raise ValueError(f"{source}: {len(wrong)} tensor(s) of the wrong shape: {details}"
                         + (f"; ... ({len(wrong) - 3} more)" if len(wrong) > 3 else ""))


def check_covers(names, model, what):
    """A weight map ({name: (variable, ...)}) must name every weight of `model` exactly once."""
    mapped = sorted(id(entry[0]) for entry in names.values())
    if mapped != sorted(id(v) for v in model.weights):
        raise ValueError(f"{what} weight map covers {len(mapped)} tensors but {model.name} has {len(model.weights)} "
                         f"weights (build the model first: build_symbolic())")


def assign(targets, tensors):
    """variable <- tensors[name] in the variable's layout, float32, for {name: (variable, perm or None)}."""
    for name, (variable, perm) in targets.items():
        value = np.asarray(tensors[name])
        variable.assign((value if perm is None else np.transpose(value, perm)).astype(np.float32))
