"""Errors users read: one line each (docs/architecture.md, "Errors")."""

import re


def one_line(error):
    """An exception's message on one line (gin and TensorFlow add context lines), parts joined by " | "."""
    return " | ".join(line.strip() for line in str(error).splitlines() if line.strip())


def tf_reason(error):
    """A TensorFlow error's message on one line, without its "{{function_node ...}}" and "[Op:...]" parts."""
    return re.sub(r"\{\{.*?\}\}|\[Op:.*", "", one_line(getattr(error, "message", error))).strip()
