"""Feast data sources: the daily feature snapshots written by ``pipelines.features.compute``.

Paths come from the platform settings (``COLDSTART_HOME``, dataset ``COLDSTART_FEATURE_DATASET``, default
``sim``); each source is a folder of one parquet file per day.
"""

import os
from datetime import timedelta

from feast import FileSource, PushSource
from feast.data_format import ParquetFormat

from pipelines.features.compute import FeatureLayout
from pipelines.settings import get_settings

_layout = FeatureLayout.for_dataset(get_settings().home, os.environ.get("COLDSTART_FEATURE_DATASET", "sim"))


def _source(table: str) -> FileSource:
    return FileSource(
        name=f"{table}_source",
        path=str(_layout.table_dir(table)),
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
# Items published and historical quality of each author's items.
author_stats_source = _source("author_stats")

# Near-line updates of item stats (new items' stats change by the hour): pushed rows go to the online store.
item_stats_push_source = PushSource(name="item_stats_push_source", batch_source=item_stats_source)

# How far back a late partition can still change materialized values.
MATERIALIZE_OVERLAP = timedelta(days=1)
