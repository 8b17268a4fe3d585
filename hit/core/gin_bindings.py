"""Gin files and bindings parsed with one-line errors and type-checked values, for callers that have imported the
configurables they bind (hit.configs.parse_gin imports all of them first)."""

import inspect
import os

import gin

from hit.core.errors import one_line

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # hit/core/ -> repository
_TYPE_NAMES = {bool: "True or False", int: "an integer", float: "a number", str: "a string"}


def parse_bindings(files, params):
    """Parse gin files then bindings; includes resolve from the repository root. An unknown key, a value of the
    wrong type or a missing file is a one-line ValueError."""
    gin.add_config_file_search_path(REPO_ROOT)
    try:
        gin.parse_config_files_and_bindings(files, params)
    except (ValueError, SyntaxError, OSError) as e:
        raise ValueError(f"bad gin config: {one_line(e)}") from None
    check_types()


def _expected_type(parameter):
    """The type a parameter takes: its annotation if it is one of _TYPE_NAMES, else its default's; None when
    neither says (a None default, a list, a reference)."""
    if parameter.annotation in _TYPE_NAMES:
        return parameter.annotation
    default = parameter.default
    return type(default) if type(default) in _TYPE_NAMES else None


def _fits(value, expected):
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def check_types():
    """A one-line ValueError for the first bound value whose type is not the parameter's (its annotation, or its
    default's type): 'ten' for a step count fails here instead of as a traceback deep inside training."""
    for (scope, selector), values in gin.config._CONFIG.items():  # noqa: SLF001 (gin 0.5 keeps bindings here)
        wrapped = gin.config._REGISTRY.get_match(selector).wrapped  # noqa: SLF001
        parameters = inspect.signature(wrapped).parameters
        for name, value in values.items():
            expected = _expected_type(parameters[name]) if name in parameters else None
            if expected is None or isinstance(value, gin.config.ConfigurableReference) or _fits(value, expected):
                continue
            where = f"{scope}/" if scope else ""
            raise ValueError(f"bad gin value: {where}{selector.rsplit('.', 1)[-1]}.{name} = {value!r}: expected "
                             f"{_TYPE_NAMES[expected]}")
