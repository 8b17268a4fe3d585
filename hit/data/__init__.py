"""Input pipelines: one reader per source, assembled by `pipeline.make_train_dataset`."""

from hit.data.pipeline import make_train_dataset

__all__ = ["make_train_dataset"]
