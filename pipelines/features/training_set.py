"""Point-in-time training sets: labelled impressions joined to the features as they were at impression time.

Labels come from the clean impressions; features through ``get_historical_features`` with the model's
feature service, so every row sees the latest snapshot stamped at or before its ``event_timestamp`` (and within
the view's TTL): the snapshot of an impression's previous day at the latest, never its own day.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pandas as pd

from pipelines.data.contract import Store

if TYPE_CHECKING:
    from feast import FeatureStore

LABELS = ["click", "conversion", "dwell_seconds"]


def labelled_impressions(data: Store, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Clean impressions of days [start, end] as an entity frame, with the item's author attached."""
    impressions = data.read_range(
        "impressions",
        start,
        end,
        layer="clean",
        columns=["request_id", "position", "user_id", "item_id", "event_time", *LABELS],
    ).to_pandas()
    if impressions.empty:
        raise ValueError(f"no clean impressions in {data.dataset!r} between {start} and {end}")
    items = data.read_range("items", end=end, layer="clean", columns=["item_id", "author_id"]).to_pandas()
    frame = impressions.merge(items, on="item_id", how="left")
    # Feast's file (Dask) offline store keeps one row per (join keys, entity timestamp) and a slate shows
    # one user several items at the same instant: a tie-break of `position` microseconds keeps every row
    # (features are daily snapshots, so no join can change by it). `event_time` keeps the logged time.
    frame["event_timestamp"] = frame["event_time"] + pd.to_timedelta(frame["position"].astype("int64"), unit="us")
    return frame


def build_training_set(
    store: FeatureStore, data: Store, start: dt.date, end: dt.date, service: str = "esmm_v1"
) -> pd.DataFrame:
    """Labelled impressions of [start, end] with the features of ``service`` as of each impression.

    Every impression is kept; a feature with no value at or before the impression (a brand-new user or item,
    or an expired snapshot) is null.
    """
    entity_df = labelled_impressions(data, start, end)
    frame = entity_df
    # Feast 0.67's file (Dask) offline store drops entity rows that match no row of a view, which would drop
    # exactly the brand-new users and items and, in a multi-view query, their other views' features with them.
    # So each view is joined on its own and merged back onto every impression.
    for projection in store.get_feature_service(service).feature_view_projections:
        features = [f"{projection.name_to_use()}:{f.name}" for f in projection.features]
        joined = store.get_historical_features(entity_df=entity_df, features=features).to_df()
        columns = [c for c in joined.columns if c not in entity_df.columns]
        frame = frame.merge(joined[["request_id", "position", *columns]], on=["request_id", "position"], how="left")
    if len(frame) != len(entity_df):
        raise RuntimeError(f"point-in-time join returned {len(frame)} rows for {len(entity_df)} impressions")
    return frame.sort_values(["event_time", "request_id", "position"], kind="stable").reset_index(drop=True)
