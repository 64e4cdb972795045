"""The near-line writer: feeds :class:`~pipelines.serving.nearline.NearlineState` from the event logs.

:func:`ingest_day` replays one day of the contract's ``items`` and ``impressions`` hour by hour, as a deployment
does near-line: items published before the hour's end enter the state, the hour's logged impressions are counted
(each click on a tracked item also logged as an engagement, which serving's look-alike channel reads), and the
controller ticks at the hour's end. The state's watermark (the end of the last hour ingested) makes a
re-run skip what was already counted, so ingesting a day twice gives the same state.

Author scores come from Feast's ``author_stats_fv`` (:func:`feast_author_scores`): the percentile of
``author_ctr_smoothed`` among the authors of the active new items that have a value. Predicted content quality
comes from Feast's ``item_content_tower_fv`` (:func:`feast_content_quality`), whose rows the publish hook
(:func:`~pipelines.features.content_tower.tower_publisher`) writes as items enter the state.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.data.contract import Store, day_bounds
from pipelines.serving.exposure import HOUR, author_percentiles
from pipelines.serving.nearline import AuthorScores, ContentQuality, NearlineState


def _seconds(column: pa.ChunkedArray) -> np.ndarray:
    """POSIX seconds of a contract timestamp column (microseconds, UTC)."""
    return pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False) / 1e6


def _recent_items(state: NearlineState, data: Store, day: dt.date, layer: str) -> dict[str, np.ndarray]:
    """Items published from ``window_hours`` before ``day`` to its end, sorted by publish time."""
    start, end = day_bounds(day)
    first = start - dt.timedelta(hours=state.cfg.window_hours)
    days = [d for d in data.partitions("items", layer) if first.date() <= d <= day]
    table = pa.concat_tables([data.read("items", d, layer, columns=["item_id", "author_id", "publish_time"])
                              for d in days]) if days else None  # fmt: skip
    if table is None or not table.num_rows:
        return {"item_id": np.zeros(0, np.int64), "author_id": np.zeros(0), "published": np.zeros(0)}
    published = _seconds(table["publish_time"])
    keep = (published >= first.timestamp()) & (published < end.timestamp())
    order = np.argsort(published[keep], kind="stable")
    authors = table["author_id"].to_numpy(zero_copy_only=False).astype(float)  # null -> NaN
    return {
        "item_id": table["item_id"].to_numpy()[keep][order],
        "author_id": authors[keep][order],
        "published": published[keep][order],
    }


def ingest_day(
    state: NearlineState,
    data: Store,
    day: dt.date,
    *,
    layer: str = "clean",
    author_scores: AuthorScores | None = None,
    on_publish: Callable[[np.ndarray, dt.date, dt.date], int] | None = None,
    content_quality: ContentQuality | None = None,
) -> dict[str, int]:
    """Feed the state from one day of logs, hour by hour, ticking at each hour's end.

    Args:
        state: the near-line state (this process is its single writer).
        data: the dataset's event-log store.
        day: the partition day of ``impressions`` to ingest (``items`` of that day and of the window before).
        layer: ``clean`` (validated; the default) or ``raw``.
        author_scores: passed to every :meth:`~NearlineState.tick` (e.g. :func:`feast_author_scores`).
        on_publish: called with the ids of the items entering the state each hour, and the first and last
            ``items`` partition they come from (e.g. :func:`~pipelines.features.content_tower.tower_publisher`,
            which writes their content-tower vectors online at publish time).
        content_quality: passed to every tick (e.g. :func:`feast_content_quality`): each new item's prior.

    Returns:
        Counts: ``hours`` ingested (hours before the watermark are skipped), items ``published`` for the first
        time, ``embedded`` (rows ``on_publish`` wrote), ``impressions`` counted (inside their item's window),
        ``active`` items after the last tick.

    Raises:
        MissingPartitionError: the day has no ``impressions`` partition in ``layer``.
    """
    impressions = data.read("impressions", day, layer, columns=["item_id", "user_id", "event_time", "click"])
    times = _seconds(impressions["event_time"])
    item_ids, user_ids = impressions["item_id"].to_numpy(), impressions["user_id"].to_numpy()
    clicks = impressions["click"].to_numpy().astype(float)
    items = _recent_items(state, data, day, layer)
    start = day_bounds(day)[0].timestamp()
    hour_of = np.floor((times - start) / HOUR)
    watermark = -math.inf if state.watermark() is None else state.watermark()
    counts = {"hours": 0, "published": 0, "embedded": 0, "impressions": 0, "active": 0}
    since = (day_bounds(day)[0] - dt.timedelta(hours=state.cfg.window_hours)).date()
    published_upto = 0
    for hour in range(24):
        end = start + (hour + 1) * HOUR
        due = int(np.searchsorted(items["published"], end, side="left"))  # published before the hour's end
        if end <= watermark:
            continue
        if due > published_upto:
            window = slice(published_upto, due)
            counts["published"] += state.publish(items["item_id"][window], items["author_id"][window],
                                                 items["published"][window])  # fmt: skip
            if on_publish is not None:
                counts["embedded"] += on_publish(items["item_id"][window], since, day)
        published_upto = max(published_upto, due)
        rows = (hour_of == hour) & (times >= watermark)
        counts["impressions"] += state.record_impressions(item_ids[rows], times[rows], clicks[rows], user_ids[rows])
        counts["active"] = state.tick(end, author_scores, content_quality)
        state.set_watermark(end)
        counts["hours"] += 1
    return counts


def feast_author_scores(feature_store) -> Callable[[list[int]], dict[int, float]]:
    """Author scores from the Feast online store: the percentile of ``author_stats_fv:author_ctr_smoothed`` among
    the asked authors that have one; the others are left out (the tick gives them ``author_default_score``).

    Args:
        feature_store: a ``feast.FeatureStore`` (e.g. :func:`pipelines.features.store.get_store`).
    """

    def scores(author_ids: list[int]) -> dict[int, float]:
        if not author_ids:
            return {}
        values = feature_store.get_online_features(
            features=["author_stats_fv:author_ctr_smoothed"], entity_rows=[{"author_id": a} for a in author_ids]
        ).to_dict()["author_ctr_smoothed"]
        return author_percentiles(dict(zip(author_ids, values, strict=True)))

    return scores


def feast_content_quality(feature_store) -> Callable[[list[int]], dict[int, float]]:
    """Predicted content quality from the Feast online store (``item_content_tower_fv:content_quality``, the
    content tower's log clicks over expected clicks); items without a row are left out (they start from the
    pooled CTR).

    Args:
        feature_store: a ``feast.FeatureStore`` with ``item_content_tower_fv`` applied.
    """

    def quality(item_ids: list[int]) -> dict[int, float]:
        if not item_ids:
            return {}
        values = feature_store.get_online_features(
            features=["item_content_tower_fv:content_quality"], entity_rows=[{"item_id": i} for i in item_ids]
        ).to_dict()["content_quality"]
        return {i: float(v) for i, v in zip(item_ids, values, strict=True) if v is not None and math.isfinite(v)}

    return quality
