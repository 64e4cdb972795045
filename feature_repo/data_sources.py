"""Feast data sources: the daily feature snapshots written by ``pipelines.features.compute``.

Each source is a folder of one parquet file per day, under the profile's state folder: ``COLDSTART_HOME`` and
the dataset ``COLDSTART_FEATURE_DATASET`` (default ``sim``), which :mod:`pipelines.features.store` sets for every
``feast plan`` / ``feast apply``. Feast takes a repository's objects by importing its modules, and a FileSource
needs its path when it is made, so the paths are read then: in :func:`_table_dir`, the one read of this repository.
(A relative path would be resolved by Feast against the ``-c`` repo folder, not the state folder, and stored as
such in the registry, where the training-set joins read it as given.)
"""

from datetime import timedelta
from pathlib import Path

from feast import FileSource, PushSource
from feast.data_format import ParquetFormat

from pipelines.features.compute import FeatureLayout
from pipelines.settings import get_settings


def _table_dir(table: str) -> Path:
    """The folder of ``table``'s daily snapshots for the settings of the process Feast imports this repo in."""
    settings = get_settings()
    return FeatureLayout.for_dataset(settings.home, settings.feature_dataset).table_dir(table)


def _source(table: str) -> FileSource:
    return FileSource(
        name=f"{table}_source",
        path=str(_table_dir(table)),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        description=f"Daily snapshots of {table}, stamped at the end of the day they describe.",
    )


# Demographics and signup age of every user, as of the end of each day.
user_profile_source = _source("user_profile")
# 1/7/30-day impression, click and conversion counts and the lifetime view count.
user_activity_source = _source("user_activity")
# Last-N clicked items and their categories (UIE's behaviour sequence).
user_recent_source = _source("user_recent")
# Exposure and click counts and smoothed CTR/CVR of live items.
item_stats_source = _source("item_stats")
# Category, keywords and content vector of each item, stamped at its publish time.
item_content_source = _source("item_content")
# Content-tower vector and predicted quality of every item, written after a tower trains and stamped at the end
# of its training window (a point-in-time join never sees a vector trained on later clicks).
item_content_tower_source = _source("item_content_tower")
# Items published and historical quality of each author's items.
author_stats_source = _source("author_stats")

# Near-line updates of item stats (new items' stats change by the hour): pushed rows go to the online store.
item_stats_push_source = PushSource(name="item_stats_push_source", batch_source=item_stats_source)

# How far back a late partition can still change materialized values.
MATERIALIZE_OVERLAP = timedelta(days=1)
