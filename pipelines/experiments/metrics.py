"""Cold-start experiment metrics, computed with DuckDB over the partitioned logs in bounded memory.

Every metric is a ratio of sums over randomization units (see :mod:`pipelines.experiments.stats`). What a
unit is depends on the design, read from the assignments:

* ``user_split``: the viewer. Impressions count for the viewer's bucket; publishing counts for the author
  (a user) in the author's own bucket.
* ``author_split``: the author. Impressions count for the bucket of the item's author (the treatment is what
  their items get); "active" means the author used the feed that day.

Item-level metrics (time to first exposure, 24 h exposure target, hot items) belong to the item's author and
the day it was published; the new-item consumer metrics split new items into high and low exposure by the
exposures they got in their first ``new_item_hours``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from pipelines.data.contract import MissingPartitionError, Store, day_bounds, sql_file_list
from pipelines.experiments.stats import Moments


class ReadoutConfig(BaseModel):
    """Thresholds of the readout (DAG Params / CLI options)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment_id: str = "exp_new_item_boost"
    new_item_hours: int = Field(48, ge=1, description="An item is new this long after publishing.")
    high_exposure_threshold: int = Field(
        1000, ge=1, description="New items with at least this many exposures while new are high-exposure."
    )
    exposure_target: int = Field(60, ge=1, description="Exposures a new item should reach in its first 24 h.")
    hot_clicks: int = Field(30, ge=1, description="Clicks within hot_days that make a new item hot (scaled).")
    hot_days: int = Field(30, ge=1)
    alpha: float = Field(0.05, gt=0, lt=1)
    layer: str = Field("clean", pattern="^(raw|clean)$")
    memory_limit: str = Field("3GB", description="DuckDB memory limit; it spills to disk above it.")


@dataclass(frozen=True)
class Metric:
    """A ratio metric: ``numerator / denominator`` summed over units."""

    name: str
    side: str
    numerator: str
    denominator: str
    description: str


METRICS = (
    Metric("publish_penetration", "author", "publishing", "active", "publishing units / daily active units"),
    Metric("posts_per_dau", "author", "posts", "active", "items published / daily active units"),
    Metric("hours_to_first_exposure", "author", "first_exposure_hours", "exposed_items",
           "hours from publishing to a new item's first impression"),
    Metric("target_reach_24h", "author", "target_reached", "new_items",
           "share of new items reaching the exposure target within 24 h"),
    Metric("new_item_ctr_high", "consumer", "new_clicks_high", "new_imps_high", "CTR of high-exposure new items"),
    Metric("new_item_ctr_low", "consumer", "new_clicks_low", "new_imps_low", "CTR of low-exposure new items"),
    Metric("new_item_interaction_high", "consumer", "new_conv_high", "new_imps_high",
           "interaction (conversion) rate of high-exposure new items"),
    Metric("new_item_interaction_low", "consumer", "new_conv_low", "new_imps_low",
           "interaction (conversion) rate of low-exposure new items"),
    Metric("ctr", "consumer", "clicks", "impressions", "overall CTR"),
    Metric("dwell_per_dau", "consumer", "dwell", "active", "dwell seconds per daily active unit"),
    Metric("impressions_per_dau", "consumer", "impressions", "active", "impressions per daily active unit"),
    Metric("dau_rate", "consumer", "active", "eligible", "daily active units per assigned unit-day"),
    Metric("hot_share", "content", "hot_items", "new_items", "share of new items that become hot"),
)  # fmt: skip
COLUMNS = sorted({c for m in METRICS for c in (m.numerator, m.denominator)})


def _files(store: Store, table: str, layer: str, start: dt.date, end: dt.date) -> str:
    """The partitions of [start, end] as a SQL list; event tables must have every day of the window."""
    days = [d for d in store.partitions(table, layer) if start <= d <= end]
    if table != "assignments":
        window = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
        if missing := sorted(set(window) - set(days)):
            raise MissingPartitionError(
                f"{layer}/{table} of {store.dataset!r} lacks {len(missing)} day(s) of the window, first {missing[0]}"
            )
    return sql_file_list(store.partition_path(table, d, layer) for d in days)


def build_unit_days(con, store: Store, start: dt.date, end: dt.date, cfg: ReadoutConfig) -> str:
    """Create the DuckDB table ``unit_days`` (unit, bucket, day, every metric column); returns the design."""
    design = _create_units(con, store, end, cfg)
    impressions = _files(store, "impressions", cfg.layer, start, end)
    publishes = _files(store, "publishes", cfg.layer, start, end)
    items = _files(store, "items", cfg.layer, store.partitions("items", cfg.layer)[0], end)
    con.execute(f"CREATE TEMP VIEW imp AS SELECT * FROM read_parquet({impressions})")
    _create_new_items(con, publishes, start, end)
    _create_item_exposure(con, cfg)
    _create_consumption(con, design, items, cfg)
    _create_activity(con)
    _create_publishing(con, cfg)
    _create_unit_days(con)
    return design


def _create_units(con, store: Store, end: dt.date, cfg: ReadoutConfig) -> str:
    """Create ``units`` (unit, bucket, design, unit_type, first assignment) of the experiment; returns its design.

    Raises:
        MissingPartitionError: when there are no assignments at all.
        ValueError: when the experiment's units do not share exactly one design.
    """
    assigned_days = store.partitions("assignments", cfg.layer)
    if not assigned_days:
        raise MissingPartitionError(f"no {cfg.layer}/assignments in {store.dataset!r}: nothing to read out")
    assignments = _files(store, "assignments", cfg.layer, assigned_days[0], end)
    con.execute(
        f"""CREATE TEMP TABLE units AS
        SELECT unit_id AS unit, any_value(bucket) AS bucket, any_value(design) AS design,
               any_value(unit_type) AS unit_type, min(assigned_at) AS assigned_at
        FROM read_parquet({assignments}) WHERE experiment_id = $exp GROUP BY unit_id""",
        {"exp": cfg.experiment_id},
    )
    designs = [r[0] for r in con.execute("SELECT DISTINCT design FROM units").fetchall()]
    if len(designs) != 1:
        raise ValueError(f"experiment {cfg.experiment_id!r} has designs {designs}; expected exactly one")
    return designs[0]


def _create_new_items(con, publishes: str, start: dt.date, end: dt.date) -> None:
    """Create ``new_items``: the items published in the window, with their author and publish day."""
    lo, hi = day_bounds(start)[0].isoformat(), day_bounds(end)[1].isoformat()
    con.execute(
        f"""CREATE TEMP TABLE new_items AS
        SELECT p.item_id, p.author_id, p.publish_time, CAST(p.publish_time AS DATE) AS day
        FROM read_parquet({publishes}) p
        WHERE p.publish_time >= TIMESTAMPTZ '{lo}' AND p.publish_time < TIMESTAMPTZ '{hi}'"""
    )


def _create_item_exposure(con, cfg: ReadoutConfig) -> None:
    """Create ``item_exposure``: each exposed new item's first impression and exposures/clicks in its windows."""
    new_age, hot_age = f"INTERVAL {cfg.new_item_hours} HOUR", f"INTERVAL {cfg.hot_days} DAY"
    con.execute(
        f"""CREATE TEMP TABLE item_exposure AS
        SELECT n.item_id,
               min(i.event_time) AS first_exposure,
               count(*) FILTER (WHERE i.event_time < n.publish_time + {new_age}) AS new_exposures,
               count(*) FILTER (WHERE i.event_time < n.publish_time + INTERVAL 24 HOUR) AS exposures_24h,
               sum(i.click) FILTER (WHERE i.event_time < n.publish_time + {hot_age}) AS hot_window_clicks
        FROM new_items n JOIN imp i ON i.item_id = n.item_id GROUP BY n.item_id"""
    )


def _create_consumption(con, design: str, items: str, cfg: ReadoutConfig) -> None:
    """Create ``consumption``: per unit and day, impressions, clicks, dwell, and high/low-exposure new-item counts.

    An impression counts for the viewer in a user split and for the item's author in an author split.
    """
    consumer_unit = "i.user_id" if design == "user_split" else "it.author_id"
    item_join = "" if design == "user_split" else f"JOIN read_parquet({items}) it ON it.item_id = i.item_id"
    con.execute(
        f"""CREATE TEMP TABLE consumption AS
        SELECT {consumer_unit} AS unit, CAST(i.event_time AS DATE) AS day,
               count(*) AS impressions, sum(i.click) AS clicks, sum(i.dwell_seconds) AS dwell,
               count(*) FILTER (WHERE hi) AS new_imps_high, sum(i.click) FILTER (WHERE hi) AS new_clicks_high,
               sum(i.conversion) FILTER (WHERE hi) AS new_conv_high,
               count(*) FILTER (WHERE lo) AS new_imps_low, sum(i.click) FILTER (WHERE lo) AS new_clicks_low,
               sum(i.conversion) FILTER (WHERE lo) AS new_conv_low
        FROM (
            SELECT i.*, (n.item_id IS NOT NULL AND x.new_exposures >= {cfg.high_exposure_threshold}
                         AND i.event_time < n.publish_time + INTERVAL {cfg.new_item_hours} HOUR) AS hi,
                        (n.item_id IS NOT NULL AND x.new_exposures < {cfg.high_exposure_threshold}
                         AND i.event_time < n.publish_time + INTERVAL {cfg.new_item_hours} HOUR) AS lo
            FROM imp i LEFT JOIN new_items n USING (item_id) LEFT JOIN item_exposure x USING (item_id)
        ) i {item_join}
        GROUP BY ALL"""
    )


def _create_activity(con) -> None:
    """Create ``activity``: the users who saw the feed, per day (``active`` = 1)."""
    con.execute(
        """CREATE TEMP TABLE activity AS
        SELECT user_id AS unit, CAST(event_time AS DATE) AS day, 1 AS active FROM imp GROUP BY ALL"""
    )


def _create_publishing(con, cfg: ReadoutConfig) -> None:
    """Create ``publishing``: per author and publish day, new items, exposure delays, targets reached, hot items."""
    con.execute(
        f"""CREATE TEMP TABLE publishing AS
        SELECT n.author_id AS unit, n.day, count(*) AS posts, 1 AS publishing, count(*) AS new_items,
               count(x.first_exposure) AS exposed_items,
               coalesce(sum(date_diff('second', n.publish_time, x.first_exposure) / 3600.0), 0) AS first_exposure_hours,
               count(*) FILTER (WHERE x.exposures_24h >= {cfg.exposure_target}) AS target_reached,
               count(*) FILTER (WHERE x.hot_window_clicks >= {cfg.hot_clicks}) AS hot_items
        FROM new_items n LEFT JOIN item_exposure x USING (item_id) GROUP BY ALL"""
    )  # noqa: E501


def _create_unit_days(con) -> None:
    """Create ``unit_days``: one row per assigned unit and day with anything in it, every metric column filled.

    ``eligible`` is 1 on every row: the unit-days each unit was eligible, for ``dau_rate``.
    """
    con.execute(
        """CREATE TEMP TABLE unit_days AS
        WITH keys AS (
            SELECT unit, day FROM consumption UNION SELECT unit, day FROM activity
            UNION SELECT unit, day FROM publishing)
        SELECT k.unit, u.bucket, k.day,
               coalesce(a.active, 0) AS active, 1 AS eligible,
               coalesce(c.impressions, 0) AS impressions, coalesce(c.clicks, 0) AS clicks,
               coalesce(c.dwell, 0) AS dwell,
               coalesce(c.new_imps_high, 0) AS new_imps_high, coalesce(c.new_clicks_high, 0) AS new_clicks_high,
               coalesce(c.new_conv_high, 0) AS new_conv_high, coalesce(c.new_imps_low, 0) AS new_imps_low,
               coalesce(c.new_clicks_low, 0) AS new_clicks_low, coalesce(c.new_conv_low, 0) AS new_conv_low,
               coalesce(p.posts, 0) AS posts, coalesce(p.publishing, 0) AS publishing,
               coalesce(p.new_items, 0) AS new_items, coalesce(p.exposed_items, 0) AS exposed_items,
               coalesce(p.first_exposure_hours, 0) AS first_exposure_hours,
               coalesce(p.target_reached, 0) AS target_reached, coalesce(p.hot_items, 0) AS hot_items
        FROM keys k JOIN units u ON u.unit = k.unit
        LEFT JOIN activity a ON a.unit = k.unit AND a.day = k.day
        LEFT JOIN consumption c ON c.unit = k.unit AND c.day = k.day
        LEFT JOIN publishing p ON p.unit = k.unit AND p.day = k.day"""
    )


def _moment_sql() -> str:
    parts = []
    for m in METRICS:
        y, x = m.numerator, m.denominator
        parts.append(
            f"sum({x})::DOUBLE AS {m.name}__sx, sum({y})::DOUBLE AS {m.name}__sy, "
            f"sum({x}*{x})::DOUBLE AS {m.name}__sxx, sum({y}*{y})::DOUBLE AS {m.name}__syy, "
            f"sum({x}*{y})::DOUBLE AS {m.name}__sxy, count(*) FILTER (WHERE {x} > 0)::DOUBLE AS {m.name}__n"
        )
    return ",\n".join(parts)


def _to_moments(row: dict) -> dict[str, Moments]:
    return {
        m.name: Moments(*(row[f"{m.name}__{k}"] or 0.0 for k in ("n", "sx", "sy", "sxx", "syy", "sxy")))
        for m in METRICS
    }


def window_moments(con, start: dt.date, end: dt.date) -> dict[str, dict[str, Moments]]:
    """bucket -> metric -> moments over the window, the unit being the randomization unit.

    ``eligible`` of a unit over the window is the number of window days from its assignment on, so that
    ``dau_rate`` counts units that never came back.
    """
    rows = con.execute(
        f"""WITH per_unit AS (
            SELECT u.unit, u.bucket,
                   date_diff('day', greatest(CAST(u.assigned_at AS DATE), DATE '{start}'), DATE '{end}') + 1
                       AS eligible,
                   {", ".join(f"coalesce(sum(d.{c}), 0) AS {c}" for c in COLUMNS if c != "eligible")}
            FROM units u LEFT JOIN unit_days d ON d.unit = u.unit
            WHERE CAST(u.assigned_at AS DATE) <= DATE '{end}'
            GROUP BY u.unit, u.bucket, u.assigned_at)
        SELECT bucket, {_moment_sql()} FROM per_unit GROUP BY bucket"""
    ).fetchall()
    names = [d[0] for d in con.description]
    return {r[0]: _to_moments(dict(zip(names, r, strict=True))) for r in rows}


def daily_moments(con) -> dict[str, dict[str, dict[str, Moments]]]:
    """day -> bucket -> metric -> moments, the unit being the unit-day.

    For dau_rate every assigned unit is eligible on each day from its assignment on.
    """
    rows = con.execute(f"SELECT day, bucket, {_moment_sql()} FROM unit_days GROUP BY day, bucket").fetchall()
    names = [d[0] for d in con.description]
    out: dict[str, dict[str, dict[str, Moments]]] = {}
    for row in rows:
        record = dict(zip(names, row, strict=True))
        out.setdefault(str(record["day"])[:10], {})[record["bucket"]] = _to_moments(record)
    eligible = con.execute(
        """SELECT CAST(d.day AS DATE) AS day, u.bucket, count(*) AS n
        FROM (SELECT DISTINCT day FROM unit_days) d JOIN units u ON CAST(u.assigned_at AS DATE) <= d.day
        GROUP BY ALL"""
    ).fetchall()
    for day, bucket, n in eligible:
        key = str(day)[:10]
        if key in out and bucket in out[key]:
            active = out[key][bucket]["dau_rate"].sy
            out[key][bucket]["dau_rate"] = Moments(n, n, active, n, active, active)
    return out


def unit_arrays(con, metric: Metric) -> dict[str, tuple]:
    """bucket -> (y, x) unit-level arrays over the window (for the bootstrap check)."""
    rows = con.execute(
        f"""SELECT bucket, list(y), list(x) FROM (
                SELECT u.bucket, coalesce(sum(d.{metric.numerator}), 0)::DOUBLE AS y,
                       coalesce(sum(d.{metric.denominator}), 0)::DOUBLE AS x
                FROM units u LEFT JOIN unit_days d ON d.unit = u.unit GROUP BY u.unit, u.bucket)
            WHERE x > 0 GROUP BY bucket"""
    ).fetchall()
    return {bucket: (y, x) for bucket, y, x in rows}
