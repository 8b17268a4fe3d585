"""Gin files and bindings as hit.main takes them: every configurable registered, then parsed and type-checked."""

from hit.core.gin_bindings import REPO_ROOT, parse_bindings  # noqa: F401 (REPO_ROOT: for the commands' callers)


def register_configurables():
    """Import every module that registers a configurable (DataSource, the tasks, Trainer, Evaluator): without
    this, a key's meaning would depend on what the caller happened to import first (a test file run alone failed
    on `Evaluator.protocol`). Their names (hit.data.DataSource, hit.tasks.GANTask, ...) are fixed by each
    @gin.configurable(module=...), whatever file defines them, so config.gin files of older runs still parse."""
    from hit.data import pipeline  # noqa: F401
    from hit.eval import evaluator  # noqa: F401
    from hit.tasks import gan, gat, vqhit  # noqa: F401
    from hit.train import trainer  # noqa: F401


def parse_gin(files, params):
    """register_configurables(), then hit.core.gin_bindings.parse_bindings(files, params): an unknown key, a
    value of the wrong type or a missing file is a one-line ValueError."""
    register_configurables()
    parse_bindings(files, params)
