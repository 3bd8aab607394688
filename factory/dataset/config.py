"""Config section ``dataset`` (shards, fields, dtypes). PLACEHOLDER: extended by issue 5."""

from __future__ import annotations

from factory.params import StrictModel


class DatasetConfig(StrictModel):
    shard_size: int = 16
