"""Input pipelines: one reader per source, assembled by `pipeline.DataSource`."""

from hit.data.pipeline import DataSource, data_stats, make_train_dataset

__all__ = ["DataSource", "data_stats", "make_train_dataset"]
