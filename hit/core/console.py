"""What a command prints: the project's own log lines (TensorFlow's informational ones hidden), one-line errors.

TensorFlow's C++ log is quieted by hit/__init__.py (TF_CPP_MIN_LOG_LEVEL, read at TensorFlow's import). Its
Python modules log informational lines through absl (checkpoint sharding times, ...): keep_project_lines drops
INFO records that do not come from this repository's code; warnings and errors from anywhere still show.
"""

import logging
import os

from absl import logging as absl_logging

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # hit/core/ -> the repository
PROJECT_DIRS = tuple(os.path.join(_ROOT, d) + os.sep for d in ("hit", "tools"))  # not .venv/ beside them


def _ours_or_important(record):
    return record.levelno >= logging.WARNING or record.pathname.startswith(PROJECT_DIRS)


def keep_project_lines(verbose=False):
    """Console: this project's INFO lines and everyone's warnings; verbose=True shows everything.

    Also routes TensorFlow's Python log through absl's handler alone (TensorFlow adds a second handler of its
    own, which printed each of its warnings twice)."""
    tf_logger = logging.getLogger("tensorflow")
    for handler in list(tf_logger.handlers):
        tf_logger.removeHandler(handler)
    handler = absl_logging.get_absl_handler().python_handler  # ABSLHandler.handle skips its own filters
    if _ours_or_important in handler.filters:
        handler.removeFilter(_ours_or_important)
    if not verbose:
        handler.addFilter(_ours_or_important)
