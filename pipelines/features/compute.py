"""Feature computation from the validated (``clean``) logs, one day at a time, with DuckDB.

Why DuckDB: the windows (1/7/30 days) and last-N sequences are SQL window aggregates over parquet; DuckDB
runs them vectorised on both cores straight from the partition files, streaming, without materialising the
day's impressions in pandas (see ``benchmarks/feature_throughput.py`` for the figures).

Per day ``d`` (the data interval), two steps:

1. **Daily aggregates** of ``d`` only (``agg_user_daily``, ``agg_item_daily``, ``clicks_daily``): small,
   idempotent per day, and all the windows need.
2. **Feature snapshots** as of the end of ``d``: each row's ``event_timestamp`` is ``d + 1 day 00:00 UTC`` (the
   moment the whole day is known), built only from aggregates of days ``<= d``. An impression on day ``d``
   therefore joins (point in time) to the snapshot of ``d - 1`` at the latest: no feature ever sees the
   future. ``item_content`` rows are stamped with the item's publish time instead.

Outputs are one parquet file per table and day, ``<home>/features/<dataset>/<table>/<date>.parquet``, written
atomically; recomputing a day replaces its files.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from pipelines.data.contract import MissingPartitionError, Store, day_bounds, sql_file_list, write_file

log = logging.getLogger(__name__)

AGGREGATES = ("agg_user_daily", "agg_item_daily", "clicks_daily")
FEATURE_TABLES = ("user_profile", "user_activity", "user_recent", "item_stats", "item_content", "author_stats")


class FeatureConfig(BaseModel):
    """Choices behind the features; logged with training runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    new_user_days: int = Field(7, ge=1, description="A user is new for this many days after signup.")
    recent_clicks: int = Field(20, ge=1, description="Length of the last-N clicked items sequence.")
    recent_window_days: int = Field(30, ge=1)
    item_live_days: int = Field(30, ge=1, description="Items older than this drop out of item_stats.")
    ctr_prior_strength: float = Field(100.0, gt=0, description="Pseudo-impressions of the CTR smoothing prior.")
    cvr_prior_strength: float = Field(20.0, gt=0, description="Pseudo-clicks of the CVR smoothing prior.")


@dataclass(frozen=True)
class FeatureLayout:
    """Where one dataset's aggregates and feature tables live."""

    root: Path

    @classmethod
    def for_dataset(cls, home: Path, dataset: str) -> FeatureLayout:
        return cls(Path(home) / "features" / dataset)

    def table_dir(self, table: str) -> Path:
        return self.root / table

    def path(self, table: str, day: dt.date) -> Path:
        return self.table_dir(table) / f"{day.isoformat()}.parquet"

    def days(self, table: str) -> list[dt.date]:
        folder = self.table_dir(table)
        if not folder.is_dir():
            return []
        return sorted(dt.date.fromisoformat(p.stem) for p in folder.glob("*.parquet") if not p.name.startswith("."))

    def glob(self, table: str, until: dt.date | None = None, since: dt.date | None = None) -> list[str]:
        """The files of ``table`` for days in [since, until]."""
        return [
            str(self.path(table, d))
            for d in self.days(table)
            if (until is None or d <= until) and (since is None or d >= since)
        ]


def _connect():
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def _clean_file(store: Store, table: str, day: dt.date) -> str:
    path = store.partition_path(table, day, "clean")
    if not path.is_file():
        raise MissingPartitionError(
            f"No clean {table} partition for {day} in {store.dataset!r}: validate that day first "
            f"(`coldstart validate --date {day}`)"
        )
    return str(path)


def _write(con, sql: str, path: Path) -> int:
    table: pa.Table = con.sql(sql).to_arrow_table()
    write_file(path, table)
    return table.num_rows


def compute_daily_aggregates(store: Store, layout: FeatureLayout, day: dt.date) -> dict[str, int]:
    """Per-entity counts of one day's clean impressions, and the day's clicks (for sequences)."""
    con = _connect()
    impressions = _clean_file(store, "impressions", day)
    items = sql_file_list(
        sorted({_clean_file(store, "items", d) for d in store.partitions("items", "clean") if d <= day})
    )
    rows = {
        "agg_user_daily": _write(
            con,
            f"""
            SELECT user_id, DATE '{day}' AS day, count(*)::BIGINT AS impressions, sum(click)::BIGINT AS clicks,
                   sum(conversion)::BIGINT AS conversions, sum(dwell_seconds)::DOUBLE AS dwell_seconds
            FROM read_parquet('{impressions}') GROUP BY user_id ORDER BY user_id""",
            layout.path("agg_user_daily", day),
        ),
        "agg_item_daily": _write(
            con,
            f"""
            SELECT item_id, DATE '{day}' AS day, count(*)::BIGINT AS impressions, sum(click)::BIGINT AS clicks,
                   sum(conversion)::BIGINT AS conversions
            FROM read_parquet('{impressions}') GROUP BY item_id ORDER BY item_id""",
            layout.path("agg_item_daily", day),
        ),
        "clicks_daily": _write(
            con,
            f"""
            SELECT i.user_id, i.item_id, it.category, i.event_time
            FROM read_parquet('{impressions}') i
            LEFT JOIN read_parquet({items}) it USING (item_id)
            WHERE i.click = 1 ORDER BY i.user_id, i.event_time, i.item_id""",
            layout.path("clicks_daily", day),
        ),
    }
    con.close()
    return rows


@dataclass(frozen=True)
class _SnapshotInputs:
    """SQL fragments for one day's feature snapshots: the snapshot time, input files and window starts."""

    cfg: FeatureConfig
    ts: str  # the snapshot's event_timestamp, a TIMESTAMPTZ literal
    users: str
    items: str
    items_of_day: str
    agg_user: str
    agg_item: str
    recent: list[str]
    d1: str
    d7: str
    d30: str


def _require_aggregates(layout: FeatureLayout, day: dt.date) -> None:
    """Fail unless every daily aggregate of ``day`` has been computed.

    Raises:
        MissingPartitionError: naming the aggregates that are missing.
    """
    missing = [t for t in AGGREGATES if day not in layout.days(t)]
    if missing:
        raise MissingPartitionError(f"Daily aggregates {missing} for {day} are missing: compute them first")


def _snapshot_inputs(store: Store, layout: FeatureLayout, day: dt.date, cfg: FeatureConfig) -> _SnapshotInputs:
    """The files (clean users and items, daily aggregates, recent clicks) and dates the snapshots of ``day`` read."""
    snapshot = day_bounds(day)[1]
    return _SnapshotInputs(
        cfg=cfg,
        ts=f"TIMESTAMPTZ '{snapshot.isoformat()}'",
        users=sql_file_list([_clean_file(store, "users", d) for d in store.partitions("users", "clean") if d <= day]),
        items=sql_file_list([_clean_file(store, "items", d) for d in store.partitions("items", "clean") if d <= day]),
        items_of_day=_clean_file(store, "items", day),
        agg_user=sql_file_list(layout.glob("agg_user_daily", until=day)),
        agg_item=sql_file_list(layout.glob("agg_item_daily", until=day)),
        recent=layout.glob("clicks_daily", until=day, since=day - dt.timedelta(days=cfg.recent_window_days - 1)),
        d1=f"DATE '{day}'",
        d7=f"DATE '{day - dt.timedelta(days=6)}'",
        d30=f"DATE '{day - dt.timedelta(days=29)}'",
    )


def _window(column: str, since: str) -> str:
    """SQL sum of ``column`` over the daily aggregates from ``since`` on."""
    return f"sum(CASE WHEN day >= {since} THEN {column} ELSE 0 END)::BIGINT"


def _user_profile_sql(snap: _SnapshotInputs) -> str:
    """Static user attributes, with the user's age on the platform and whether they are still new."""
    ts, cfg = snap.ts, snap.cfg
    return f"""
            SELECT user_id, {ts} AS event_timestamp, gender, age::INTEGER AS age, occupation, region, device,
                   is_author::INTEGER AS is_author,
                   date_diff('second', signup_time, {ts}) / 86400.0 AS days_since_signup,
                   (date_diff('second', signup_time, {ts}) < {cfg.new_user_days} * 86400)::INTEGER AS is_new_user
            FROM read_parquet({snap.users}) ORDER BY user_id"""


def _user_activity_sql(snap: _SnapshotInputs) -> str:
    """Each user's impressions, clicks and conversions over the 1/7/30-day windows."""
    d1, d7, d30 = snap.d1, snap.d7, snap.d30
    return f"""
            SELECT user_id, {snap.ts} AS event_timestamp,
                   {_window("impressions", d1)} AS impressions_1d,
                   {_window("impressions", d7)} AS impressions_7d,
                   {_window("impressions", d30)} AS impressions_30d,
                   {_window("clicks", d1)} AS clicks_1d, {_window("clicks", d7)} AS clicks_7d,
                   {_window("clicks", d30)} AS clicks_30d,
                   {_window("conversions", d7)} AS conversions_7d,
                   {_window("conversions", d30)} AS conversions_30d,
                   sum(impressions)::BIGINT AS view_count
            FROM read_parquet({snap.agg_user}) GROUP BY user_id ORDER BY user_id"""


def _item_stats_sql(snap: _SnapshotInputs) -> str:
    """Exposures and clicks of live items, with CTR and CVR smoothed towards the 7-day rates of all items."""
    ts, cfg, d1, d7 = snap.ts, snap.cfg, snap.d1, snap.d7
    return f"""
            WITH stats AS (
                SELECT item_id,
                       {_window("impressions", d1)} AS exposures_1d,
                       {_window("impressions", d7)} AS exposures_7d,
                       sum(impressions)::BIGINT AS exposures_total,
                       {_window("clicks", d1)} AS item_clicks_1d, {_window("clicks", d7)} AS item_clicks_7d,
                       sum(clicks)::BIGINT AS item_clicks_total, {_window("conversions", d7)} AS conversions_7d
                FROM read_parquet({snap.agg_item}) GROUP BY item_id),
            prior AS (
                SELECT sum(item_clicks_7d) / greatest(sum(exposures_7d), 1) AS ctr,
                       sum(conversions_7d) / greatest(sum(item_clicks_7d), 1) AS cvr FROM stats)
            SELECT it.item_id, {ts} AS event_timestamp,
                   date_diff('second', it.publish_time, {ts}) / 3600.0 AS age_hours,
                   coalesce(s.exposures_1d, 0) AS exposures_1d, coalesce(s.exposures_7d, 0) AS exposures_7d,
                   coalesce(s.exposures_total, 0) AS exposures_total,
                   coalesce(s.item_clicks_1d, 0) AS item_clicks_1d, coalesce(s.item_clicks_7d, 0) AS item_clicks_7d,
                   coalesce(s.item_clicks_total, 0) AS item_clicks_total,
                   (coalesce(s.item_clicks_7d, 0) + {cfg.ctr_prior_strength} * p.ctr)
                       / (coalesce(s.exposures_7d, 0) + {cfg.ctr_prior_strength}) AS ctr_smoothed_7d,
                   (coalesce(s.conversions_7d, 0) + {cfg.cvr_prior_strength} * p.cvr)
                       / (coalesce(s.item_clicks_7d, 0) + {cfg.cvr_prior_strength}) AS cvr_smoothed_7d
            FROM read_parquet({snap.items}) it CROSS JOIN prior p LEFT JOIN stats s USING (item_id)
            WHERE it.publish_time > {ts} - INTERVAL {cfg.item_live_days} DAY OR s.exposures_7d > 0
            ORDER BY it.item_id"""


def _item_content_sql(snap: _SnapshotInputs) -> str:
    """The content of the items published on the day, stamped with their publish time."""
    return f"""
            SELECT item_id, publish_time AS event_timestamp, author_id, category, keywords, content_vector
            FROM read_parquet('{snap.items_of_day}') ORDER BY item_id"""


def _author_stats_sql(snap: _SnapshotInputs) -> str:
    """Each author's items published, and the 30-day CTR and CVR of their items smoothed towards all items'."""
    ts, cfg = snap.ts, snap.cfg
    return f"""
            WITH recent AS (
                SELECT item_id, sum(impressions) AS exposures, sum(clicks) AS clicks, sum(conversions) AS conversions
                FROM read_parquet({snap.agg_item}) WHERE day >= {snap.d30} GROUP BY item_id),
            prior AS (
                SELECT sum(clicks) / greatest(sum(exposures), 1) AS ctr,
                       sum(conversions) / greatest(sum(clicks), 1) AS cvr FROM recent)
            SELECT it.author_id, {ts} AS event_timestamp,
                   count(*)::BIGINT AS items_published,
                   count(*) FILTER (WHERE it.publish_time >= {ts} - INTERVAL 30 DAY)::BIGINT AS items_published_30d,
                   (coalesce(sum(r.clicks), 0) + {cfg.ctr_prior_strength} * any_value(p.ctr))
                       / (coalesce(sum(r.exposures), 0) + {cfg.ctr_prior_strength}) AS author_ctr_smoothed,
                   (coalesce(sum(r.conversions), 0) + {cfg.cvr_prior_strength} * any_value(p.cvr))
                       / (coalesce(sum(r.clicks), 0) + {cfg.cvr_prior_strength}) AS author_cvr_smoothed
            FROM read_parquet({snap.items}) it CROSS JOIN prior p LEFT JOIN recent r USING (item_id)
            WHERE it.author_id IS NOT NULL GROUP BY it.author_id ORDER BY it.author_id"""


def _user_recent_sql(snap: _SnapshotInputs) -> str:
    """Each user's last ``recent_clicks`` clicked items and their categories, newest first."""
    return f"""
            WITH ranked AS (
                SELECT user_id, item_id, category, event_time,
                       row_number() OVER (PARTITION BY user_id ORDER BY event_time DESC, item_id DESC) AS k
                FROM read_parquet({sql_file_list(snap.recent)}))
            SELECT user_id, {snap.ts} AS event_timestamp,
                   list(item_id ORDER BY k) AS recent_item_ids, list(category ORDER BY k) AS recent_categories,
                   count(*)::INTEGER AS recent_clicks
            FROM ranked WHERE k <= {snap.cfg.recent_clicks} GROUP BY user_id ORDER BY user_id"""


def _feature_queries(snap: _SnapshotInputs) -> dict[str, str]:
    """table -> the query of its snapshot; ``user_recent`` only when there are clicks in its window."""
    queries = {
        "user_profile": _user_profile_sql(snap),
        "user_activity": _user_activity_sql(snap),
        "item_stats": _item_stats_sql(snap),
        "item_content": _item_content_sql(snap),
        "author_stats": _author_stats_sql(snap),
    }
    if snap.recent:
        queries["user_recent"] = _user_recent_sql(snap)
    return queries


def compute_feature_tables(
    store: Store, layout: FeatureLayout, day: dt.date, cfg: FeatureConfig | None = None
) -> dict[str, int]:
    """The feature snapshots as of the end of ``day`` (see the module docstring)."""
    _require_aggregates(layout, day)
    queries = _feature_queries(_snapshot_inputs(store, layout, day, cfg or FeatureConfig()))
    con = _connect()
    rows = {table: _write(con, sql, layout.path(table, day)) for table, sql in queries.items()}
    con.close()
    return rows


def compute_features(store: Store, layout: FeatureLayout, day: dt.date, cfg: FeatureConfig | None = None) -> dict:
    """Daily aggregates then feature snapshots for ``day``; returns rows written per table and timings."""
    started = time.perf_counter()
    rows = compute_daily_aggregates(store, layout, day)
    rows.update(compute_feature_tables(store, layout, day, cfg))
    seconds = time.perf_counter() - started
    log.info("features for %s %s: %s in %.1fs", store.dataset, day, rows, seconds)
    return {"date": day.isoformat(), "rows": rows, "seconds": seconds}
