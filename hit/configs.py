"""Gin files and bindings as the commands take them (hit.main, tools/compare_generators.py)."""

import os

import gin

from hit.errors import one_line

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_gin(files, params):
    """Parse gin files then bindings; includes resolve from the repository root. An unknown key, bad value or
    missing file is a one-line ValueError."""
    # Every configurable registers on import: without these, a key's meaning would depend on what the caller
    # happened to import first (a test file run alone failed on `Evaluator.protocol`).
    from hit import data, tasks, train  # noqa: F401
    from hit.eval import evaluator  # noqa: F401
    gin.add_config_file_search_path(REPO_ROOT)
    try:
        gin.parse_config_files_and_bindings(files, params)
    except (ValueError, SyntaxError, OSError) as e:
        raise ValueError(f"bad gin config: {one_line(e)}") from None
