"""Unit-days of a cold-start experiment, built with DuckDB over the partitioned logs in bounded memory.

What each metric means (its numerator and denominator, per unit type) is in
:mod:`pipelines.experiments.definitions`; this module fills the columns they read, one row per assigned unit
and day: consumption (credited to the viewer in a user split, to the item's author in an author split),
activity (viewed the feed or published), publishing and the follow-up of the items published that day.

Item follow-up reads impressions up to ``observed`` (the readout's end, or later with
``ReadoutConfig.follow_up_days``); an item enters an item metric only when its window has ended by then
(``matured_*`` columns), so items published late in the window do not bias those metrics low.
"""

from __future__ import annotations

import datetime as dt

from pipelines.data.contract import MissingPartitionError, Store, day_bounds, sql_file_list
from pipelines.experiments.config import ReadoutConfig
from pipelines.experiments.definitions import METRICS_BY_UNIT, Metric, metrics_for

__all__ = ["Metric", "ReadoutConfig", "build_unit_days", "create_units", "drop_intermediates", "observed_until"]

CONSUMPTION = ("impressions", "clicks", "dwell", "new_imps", "new_imps_high", "new_clicks_high", "new_conv_high",
               "new_imps_low", "new_clicks_low", "new_conv_low")  # fmt: skip
PUBLISHING = ("posts", "publishing", "new_items", "matured_first", "first_exposure_hours", "matured_24h",
              "target_reached", "matured_hot", "hot_items")  # fmt: skip
_INTERMEDIATES = ("new_items", "item_exposure", "consumption", "activity", "publishing")


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


def observed_until(store: Store, end: dt.date, cfg: ReadoutConfig) -> dt.date:
    """The last day item follow-ups may read: ``end``, or up to ``follow_up_days`` later as far as days exist."""
    have = set(store.partitions("impressions", cfg.layer))
    last = end
    while (last - end).days < cfg.follow_up_days and last + dt.timedelta(days=1) in have:
        last += dt.timedelta(days=1)
    return last


def create_units(con, store: Store, end: dt.date, cfg: ReadoutConfig) -> tuple[str, str]:
    """Create ``units`` (unit, bucket, design, unit_type, first assignment); returns (design, unit type).

    Raises:
        MissingPartitionError: when there are no assignments at all.
        ValueError: when the experiment's units do not share exactly one design and unit type.
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
    kinds = con.execute("SELECT DISTINCT design, unit_type FROM units").fetchall()
    if len(kinds) != 1 or kinds[0][1] not in METRICS_BY_UNIT:
        raise ValueError(f"experiment {cfg.experiment_id!r} has (design, unit type) {kinds}; expected exactly one")
    return kinds[0][0], kinds[0][1]


def build_unit_days(
    con,
    store: Store,
    unit_type: str,
    start: dt.date,
    end: dt.date,
    cfg: ReadoutConfig,
    observed: dt.date,
    table: str = "unit_days",
) -> tuple[Metric, ...]:
    """Create ``table`` (unit, bucket, day, every unit-day column) over [start, end]; returns the metric family.

    Item follow-ups read impressions through ``observed`` (>= ``end``); ``units`` must exist
    (:func:`create_units`). The intermediate tables stay until :func:`drop_intermediates`.
    """
    impressions = _files(store, "impressions", cfg.layer, start, end)
    follow = _files(store, "impressions", cfg.layer, start, observed)
    publishes = _files(store, "publishes", cfg.layer, start, end)
    items = _files(store, "items", cfg.layer, store.partitions("items", cfg.layer)[0], end)
    con.execute(f"CREATE TEMP VIEW imp AS SELECT * FROM read_parquet({impressions})")
    con.execute(f"CREATE TEMP VIEW imp_follow AS SELECT * FROM read_parquet({follow})")
    _create_new_items(con, publishes, start, end, observed, cfg)
    _create_item_exposure(con, cfg)
    _create_consumption(con, unit_type, items, cfg)
    _create_activity(con)
    _create_publishing(con, cfg)
    _create_unit_days(con, table)
    return metrics_for(unit_type)


def drop_intermediates(con) -> None:
    """Drop what :func:`build_unit_days` built on the way, so that it can run again (e.g. for a pre-period)."""
    for name in _INTERMEDIATES:
        con.execute(f"DROP TABLE IF EXISTS {name}")
    con.execute("DROP VIEW IF EXISTS imp")
    con.execute("DROP VIEW IF EXISTS imp_follow")


def _create_new_items(con, publishes: str, start: dt.date, end: dt.date, observed: dt.date, cfg: ReadoutConfig) -> None:
    """Create ``new_items``: items published in the window, their author, day, and which windows are observed."""
    lo, hi = day_bounds(start)[0].isoformat(), day_bounds(end)[1].isoformat()
    seen = f"TIMESTAMPTZ '{day_bounds(observed)[1].isoformat()}'"
    con.execute(
        f"""CREATE TEMP TABLE new_items AS
        SELECT p.item_id, p.author_id, p.publish_time, CAST(p.publish_time AS DATE) AS day,
               p.publish_time + INTERVAL {cfg.first_exposure_cap_hours} HOUR <= {seen} AS matured_first,
               p.publish_time + INTERVAL 24 HOUR <= {seen} AS matured_24h,
               p.publish_time + INTERVAL {cfg.new_item_hours} HOUR <= {seen} AS matured_new,
               p.publish_time + INTERVAL {cfg.hot_days} DAY <= {seen} AS matured_hot,
               (epoch({seen}) - epoch(p.publish_time)) / 3600.0 AS followed_hours
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
        FROM new_items n JOIN imp_follow i ON i.item_id = n.item_id GROUP BY n.item_id"""
    )


def _create_consumption(con, unit_type: str, items: str, cfg: ReadoutConfig) -> None:
    """Create ``consumption``: per unit and day, impressions, clicks, dwell, and new-item counts.

    An impression counts for the viewer (user units) or for the item's author (author units). An impression of
    a new item while new is ``new``; it is high or low exposure only if the item's ``new_item_hours`` are
    observed (otherwise a late item would look low-exposure for lack of time).
    """
    consumer_unit = "i.user_id" if unit_type == "user" else "it.author_id"
    item_join = "" if unit_type == "user" else f"JOIN read_parquet({items}) it ON it.item_id = i.item_id"
    is_new = f"i.event_time < n.publish_time + INTERVAL {cfg.new_item_hours} HOUR"
    known = f"{is_new} AND n.matured_new"
    thr = cfg.high_exposure_threshold
    con.execute(
        f"""CREATE TEMP TABLE consumption AS
        SELECT unit, day, count(*) AS impressions, sum(click) AS clicks, sum(dwell_seconds) AS dwell,
               count(*) FILTER (WHERE is_new) AS new_imps,
               count(*) FILTER (WHERE hi) AS new_imps_high, sum(click) FILTER (WHERE hi) AS new_clicks_high,
               sum(conversion) FILTER (WHERE hi) AS new_conv_high,
               count(*) FILTER (WHERE lo) AS new_imps_low, sum(click) FILTER (WHERE lo) AS new_clicks_low,
               sum(conversion) FILTER (WHERE lo) AS new_conv_low
        FROM (
            SELECT {consumer_unit} AS unit, CAST(i.event_time AS DATE) AS day, i.click, i.conversion,
                   i.dwell_seconds, coalesce({is_new}, false) AS is_new,
                   coalesce({known} AND x.new_exposures >= {thr}, false) AS hi,
                   coalesce({known} AND x.new_exposures < {thr}, false) AS lo
            FROM imp i LEFT JOIN new_items n USING (item_id) LEFT JOIN item_exposure x USING (item_id) {item_join}
        ) GROUP BY unit, day"""
    )


def _create_activity(con) -> None:
    """Create ``activity``: the units active per day (``active`` = 1): they saw the feed or published."""
    con.execute(
        """CREATE TEMP TABLE activity AS
        SELECT user_id AS unit, CAST(event_time AS DATE) AS day, 1 AS active FROM imp GROUP BY ALL
        UNION SELECT author_id AS unit, day, 1 AS active FROM new_items"""
    )


def _create_publishing(con, cfg: ReadoutConfig) -> None:
    """Create ``publishing``: per author and publish day, posts, and the follow-up of the matured items.

    ``first_exposure_hours`` sums, over items whose cap is observed, the hours to first exposure capped at
    ``first_exposure_cap_hours``: a never-exposed item adds the cap.
    """
    cap = float(cfg.first_exposure_cap_hours)
    hours = "(epoch(x.first_exposure) - epoch(n.publish_time)) / 3600.0"
    con.execute(
        f"""CREATE TEMP TABLE publishing AS
        SELECT n.author_id AS unit, n.day, count(*) AS posts, 1 AS publishing, count(*) AS new_items,
               count(*) FILTER (WHERE n.matured_first) AS matured_first,
               coalesce(sum(least(coalesce({hours}, {cap}), {cap})) FILTER (WHERE n.matured_first), 0)
                   AS first_exposure_hours,
               count(*) FILTER (WHERE n.matured_24h) AS matured_24h,
               count(*) FILTER (WHERE n.matured_24h AND x.exposures_24h >= {cfg.exposure_target}) AS target_reached,
               count(*) FILTER (WHERE n.matured_hot) AS matured_hot,
               count(*) FILTER (WHERE n.matured_hot AND x.hot_window_clicks >= {cfg.hot_clicks}) AS hot_items
        FROM new_items n LEFT JOIN item_exposure x USING (item_id) GROUP BY ALL"""
    )


def _create_unit_days(con, table: str) -> None:
    """Create ``table``: one row per assigned unit and day with anything in it, every column filled.

    ``eligible`` is 1 on every row: the unit-days each unit was eligible (the window sums replace it).
    """
    consumed = ", ".join(f"coalesce(c.{c}, 0) AS {c}" for c in CONSUMPTION)
    published = ", ".join(f"coalesce(p.{c}, 0) AS {c}" for c in PUBLISHING)
    con.execute(
        f"""CREATE TEMP TABLE {table} AS
        WITH keys AS (
            SELECT unit, day FROM consumption UNION SELECT unit, day FROM activity
            UNION SELECT unit, day FROM publishing)
        SELECT k.unit, u.bucket, k.day, coalesce(a.active, 0) AS active, 1 AS eligible, {consumed}, {published}
        FROM keys k JOIN units u ON u.unit = k.unit
        LEFT JOIN activity a ON a.unit = k.unit AND a.day = k.day
        LEFT JOIN consumption c ON c.unit = k.unit AND c.day = k.day
        LEFT JOIN publishing p ON p.unit = k.unit AND p.day = k.day"""
    )
