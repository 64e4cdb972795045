"""The content tower's feature table (``item_content_tower``, Feast's ``item_content_tower_fv``).

Two writers, one row shape (:meth:`~pipelines.serving.content_vectors.TowerEmbedder.feature_rows`):

* :func:`write_tower_features`, after a tower becomes champion: every item published up to the training
  window's end, stamped at the end of that day, into the day's file of the offline table, then materialized.
  The stamp is the point-in-time guarantee: a training set joined as of an earlier time never sees a vector
  whose weights learned from later clicks. Re-running replaces the day's file (same tower, same rows).
* :func:`publish_tower_rows`, at publish time (the near-line path): a brand-new item's row, stamped at its
  publish time, straight into the online store, so a lookup of it serves a tower vector before the next batch.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipelines.data.contract import Store, day_bounds
from pipelines.features.compute import FeatureLayout
from pipelines.settings import Settings

if TYPE_CHECKING:
    from pipelines.serving.content_vectors import TowerEmbedder

log = logging.getLogger(__name__)

TABLE = "item_content_tower"
VIEW = "item_content_tower_fv"
_CONTENT = ["item_id", "category", "keywords", "content_vector"]


def catalog_until(layout: FeatureLayout, end: dt.date) -> pd.DataFrame:
    """Every item published up to the end of ``end``: its latest content row (``item_content`` files to ``end``)."""
    files = layout.glob("item_content", until=end)
    if not files:
        return pd.DataFrame(columns=_CONTENT)
    frame = pd.concat([pd.read_parquet(f, columns=[*_CONTENT, "event_timestamp"]) for f in files])
    frame = frame[pd.to_datetime(frame["event_timestamp"], utc=True) < day_bounds(end)[1]]
    return frame.drop_duplicates("item_id", keep="last")[_CONTENT].reset_index(drop=True)


def write_tower_features(
    settings: Settings, dataset: str, tower: TowerEmbedder, end: dt.date, materialize: bool = True
) -> dict:
    """Embed the catalog as of ``end`` with ``tower``, write the day's file and load it into the online store.

    Args:
        settings: the profile (its feature tables and Feast store).
        dataset: the dataset whose catalog to embed.
        tower: the tower version (its rows name it).
        end: the tower's training-window end: rows are stamped at the end of this day.
        materialize: load the rows into the online store (the view must be applied).

    Returns:
        ``rows`` written, the ``path`` of the file, the ``stamp`` and the tower ``version``.
    """
    layout = FeatureLayout.for_dataset(settings.home, dataset)
    items = catalog_until(layout, end)
    stamp = day_bounds(end)[1]
    rows = tower.feature_rows(items, stamp)
    path = layout.path(TABLE, end)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")  # a reader never sees half a file
    rows.to_parquet(partial, index=False)
    partial.replace(path)
    if materialize and len(rows):
        from pipelines.features.store import get_store, materialize_window

        materialize_window(get_store(settings, dataset), [VIEW], stamp - dt.timedelta(seconds=1), stamp)
    log.info("wrote %d %s rows of tower v%s stamped %s", len(rows), TABLE, tower.version, stamp)
    return {"rows": len(rows), "path": str(path), "stamp": stamp.isoformat(), "version": tower.version}


def publish_tower_rows(feature_store, tower: TowerEmbedder, items: pd.DataFrame) -> int:
    """Write newly published items' tower rows to the online store, stamped at their ``publish_time``.

    Args:
        feature_store: a ``feast.FeatureStore`` with ``item_content_tower_fv`` applied.
        tower: the champion tower.
        items: ``item_id``, ``publish_time`` and the content (``category``, ``keywords``, ``content_vector``).

    Returns:
        The rows written.
    """
    if not len(items):
        return 0
    rows = tower.feature_rows(items.reset_index(drop=True), pd.to_datetime(items["publish_time"], utc=True).to_numpy())
    feature_store.write_to_online_store(VIEW, rows)
    return len(rows)


def tower_publisher(feature_store, tower: TowerEmbedder, data: Store, layer: str = "clean") -> Callable:
    """A publish hook for :func:`~pipelines.serving.nearline_ingest.ingest_day`: ``hook(item_ids, since, day)``
    embeds the items as they enter the near-line state and writes their rows online (:func:`publish_tower_rows`).

    The content of the ``items`` partitions of [since, day] is read once per partition, the first time one of
    its items is published.
    """
    content: dict[int, dict] = {}
    days_read: set[dt.date] = set()

    def hook(item_ids: np.ndarray, since: dt.date, day: dt.date) -> int:
        for d in data.partitions("items", layer):
            if since <= d <= day and d not in days_read:
                frame = data.read("items", d, layer, columns=[*_CONTENT, "publish_time"]).to_pandas()
                content.update({int(r["item_id"]): r for r in frame.to_dict("records")})
                days_read.add(d)
        rows = pd.DataFrame([content[int(i)] for i in item_ids if int(i) in content])
        return publish_tower_rows(feature_store, tower, rows)

    return hook
