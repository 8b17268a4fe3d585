"""Input pipelines: one reader per source, assembled by `pipeline.DataSource`."""
