"""Point-in-time training sets: labelled impressions joined to the features as they were at impression time.

Labels come from the clean impressions. Features come from the feature views of the model's Feast feature
service: every row sees the latest snapshot stamped at or before its ``event_timestamp`` and within the view's
TTL (both bounds inclusive, as in Feast; a TTL of 0 means no limit), so an impression on day ``d`` sees the
snapshot of ``d - 1`` at the latest, never its own day.

Two implementations of the same join:

* :func:`build_training_set` (what training and evaluation use): one DuckDB query with an ``ASOF LEFT JOIN``
  per feature view, straight over the views' parquet sources. Which views, features, join keys, TTLs and
  source folders come from the Feast registry, so Feast stays the one definition of the features.
* :func:`feast_training_set`: Feast's own ``get_historical_features`` (file/Dask offline store), the reference
  the DuckDB join is tested against (``tests/integration/test_features.py``). It holds every entity row in
  pandas, several times over, and at 1M impressions took 117 s against DuckDB's few seconds
  (``benchmarks/README.md``).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from pipelines.data.contract import Store, sql_file_list
from pipelines.features.compute import FeatureLayout

if TYPE_CHECKING:
    from feast import FeatureStore

LABELS = ["click", "conversion", "dwell_seconds"]
ENTITY_COLUMNS = ["request_id", "position", "user_id", "item_id", "event_time", *LABELS]
ORDER = ["event_time", "request_id", "position"]


def labelled_impressions(data: Store, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Clean impressions of days [start, end] as an entity frame, with the item's author attached."""
    impressions = data.read_range("impressions", start, end, layer="clean", columns=ENTITY_COLUMNS).to_pandas()
    if impressions.empty:
        raise ValueError(f"no clean impressions in {data.dataset!r} between {start} and {end}")
    items = data.read_range("items", end=end, layer="clean", columns=["item_id", "author_id"]).to_pandas()
    frame = impressions.merge(items, on="item_id", how="left")
    # Feast's file (Dask) offline store keeps one row per (join keys, entity timestamp) and a slate shows
    # one user several items at the same instant: a tie-break of `position` microseconds keeps every row
    # (features are daily snapshots, so no join can change by it). `event_time` keeps the logged time.
    frame["event_timestamp"] = frame["event_time"] + pd.to_timedelta(frame["position"].astype("int64"), unit="us")
    return frame


@dataclass(frozen=True)
class ViewJoin:
    """What the point-in-time join needs to know about one feature view, read from the Feast registry."""

    name: str
    join_keys: tuple[str, ...]
    features: tuple[str, ...]
    ttl: dt.timedelta
    source: Path
    timestamp_field: str

    @classmethod
    def of(cls, view, features: Sequence[str] | None = None, name: str | None = None) -> ViewJoin:
        """From a Feast ``FeatureView`` (all its features unless ``features`` names some).

        Raises:
            NotImplementedError: the source has a created-timestamp column or a field mapping (not read here).
        """
        source = view.batch_source
        if getattr(source, "created_timestamp_column", "") or getattr(source, "field_mapping", {}):
            raise NotImplementedError(f"{view.name}: created timestamps and field mappings are not supported here")
        return cls(
            name=name or view.name,
            join_keys=tuple(c.name for c in view.entity_columns),
            features=tuple(features if features is not None else (f.name for f in view.features)),
            ttl=view.ttl or dt.timedelta(0),
            source=Path(source.path),
            timestamp_field=source.timestamp_field,
        )

    def source_files(self, since: dt.date | None = None, until: dt.date | None = None) -> list[str]:
        """The source's daily files for days in [since, until] (a source folder is a feature table's folder)."""
        return FeatureLayout(self.source.parent).glob(self.source.name, until=until, since=since)

    def files(self, start: dt.date, end: dt.date) -> list[str]:
        """The source's daily files that can match an impression of [start, end].

        A file named for day ``d`` holds rows stamped at the end of ``d`` at the latest (snapshots at ``d + 1
        00:00``, item content at its publish time), so later files cannot match and, with a TTL, files before
        ``start - ttl - 1 day`` are expired for every row.
        """
        return self.source_files(since=start - self.ttl - dt.timedelta(days=1) if self.ttl else None, until=end)


def view_joins(store: FeatureStore, service: str) -> list[ViewJoin]:
    """The feature views of ``service`` as :class:`ViewJoin`, in the service's order."""
    return [
        ViewJoin.of(store.get_feature_view(p.name), [f.name for f in p.features], p.name_to_use())
        for p in store.get_feature_service(service).feature_view_projections
    ]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def point_in_time_sql(views: list[ViewJoin], start: dt.date, end: dt.date) -> str:
    """One query: the ``entities`` relation with an ``ASOF LEFT JOIN`` per view and the TTL applied."""
    selects, joins = ["e.*"], []
    for i, view in enumerate(views):
        alias, stamp = f"v{i}", f"_ts{i}"
        files = view.files(start, end)
        keys = ", ".join(_quote(k) for k in view.join_keys)
        features = ", ".join(_quote(f) for f in view.features)
        if files:
            source = (f"SELECT {keys}, {_quote(view.timestamp_field)} AS {stamp}, {features} "
                      f"FROM read_parquet({sql_file_list(files)}, union_by_name = true)")  # fmt: skip
        else:  # nothing computed yet: every feature of the view is null
            source = f"SELECT {keys}, NULL::TIMESTAMPTZ AS {stamp}, {features} FROM entities WHERE false"
        on = " AND ".join(f"e.{_quote(k)} = {alias}.{_quote(k)}" for k in view.join_keys)
        joins.append(f"ASOF LEFT JOIN ({source}) {alias} ON {on} AND e.event_timestamp >= {alias}.{stamp}")
        valid = f"{alias}.{stamp} >= e.event_timestamp - INTERVAL '{int(view.ttl.total_seconds())} seconds'"
        for feature in view.features:
            column = f"{alias}.{_quote(feature)}"
            selects.append(f"CASE WHEN {valid} THEN {column} END AS {_quote(feature)}" if view.ttl else column)
    order = ", ".join(f"e.{c}" for c in ORDER)
    return f"SELECT {', '.join(selects)} FROM entities e {' '.join(joins)} ORDER BY {order}"


def build_training_set(
    store: FeatureStore,
    data: Store,
    start: dt.date,
    end: dt.date,
    service: str = "esmm_v1",
    features: Sequence[str] | None = None,
    memory_limit: str = "2GB",
) -> pd.DataFrame:
    """Labelled impressions of [start, end] with the features of ``service`` as of each impression (DuckDB).

    Every impression is kept, ordered by time; a feature with no value at or before the impression (a brand-new
    user or item, or an expired snapshot) is null. Integer features with nulls come back as floats, as from
    :func:`feast_training_set`; list features as Arrow-backed columns (``pd.ArrowDtype``, a missing list is
    ``pd.NA``), where Feast gives numpy arrays in object columns.

    Args:
        features: keep only these of the service's features (default: all); a view none of whose features
            is kept is not joined.
        memory_limit: DuckDB's limit; it spills to a temporary folder beyond it. The join runs one day at a
            time, so its memory does not grow with the window.

    Raises:
        ValueError: when there are no clean impressions in the window, or ``features`` names one the service
            does not have.
    """
    views = _select_features(view_joins(store, service), service, features)
    days = [d for d in data.partitions("impressions", "clean") if start <= d <= end]
    if not days:
        raise ValueError(f"no clean impressions in {data.dataset!r} between {start} and {end}")
    table = pa.concat_tables(_join_days(data, views, days, _authors_sql(data, end), memory_limit))
    if table.num_rows == 0:
        raise ValueError(f"no clean impressions in {data.dataset!r} between {start} and {end}")
    return table.to_pandas(types_mapper=_list_dtype, split_blocks=True, self_destruct=True)


def _select_features(views: list[ViewJoin], service: str, features: Sequence[str] | None) -> list[ViewJoin]:
    """``views`` narrowed to ``features`` (all when None), dropping views left with none.

    Raises:
        ValueError: when ``features`` names one that no view has.
    """
    if features is None:
        return views
    unknown = sorted(set(features) - {f for v in views for f in v.features})
    if unknown:
        raise ValueError(f"feature service {service!r} has no features {unknown}")
    views = [replace(v, features=tuple(f for f in v.features if f in features)) for v in views]
    return [v for v in views if v.features]


def _authors_sql(data: Store, end: dt.date) -> str:
    """A query of every item's author, from the clean items published up to ``end``."""
    items = [str(data.partition_path("items", d, "clean")) for d in data.partitions("items", "clean") if d <= end]
    if items:
        return f"SELECT item_id, author_id FROM read_parquet({sql_file_list(items)})"
    return "SELECT NULL::BIGINT AS item_id, NULL::BIGINT AS author_id WHERE false"


def _join_days(
    data: Store, views: list[ViewJoin], days: list[dt.date], authors_sql: str, memory_limit: str
) -> list[pa.Table]:
    """The point-in-time join of each day's impressions, one Arrow table per day, in a spilling DuckDB."""
    import duckdb

    parts = []
    with tempfile.TemporaryDirectory(prefix="duckdb-pit-") as spill:
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET memory_limit = '{memory_limit}'")
        con.execute(f"SET temp_directory = '{spill}'")
        con.execute(f"CREATE TEMP TABLE authors AS {authors_sql}")
        for day in days:
            _load_entities(con, data, day)
            parts.append(con.sql(point_in_time_sql(views, day, day)).to_arrow_table())
        con.close()
    return parts


def _load_entities(con, data: Store, day: dt.date) -> None:
    """Replace the ``entities`` table with the clean impressions of ``day``, their authors and entity timestamps."""
    impressions = data.partition_path("impressions", day, "clean")
    columns = ", ".join(f"i.{c}" for c in ENTITY_COLUMNS)
    # The tie-break of `position` microseconds matches labelled_impressions (see there).
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE entities AS SELECT {columns}, a.author_id, "
        "i.event_time + to_microseconds(i.position::BIGINT) AS event_timestamp FROM "
        f"read_parquet('{impressions}') i LEFT JOIN authors a USING (item_id)"
    )


def _list_dtype(arrow_type: pa.DataType) -> pd.ArrowDtype | None:
    # List cells as numpy arrays cost ~100 bytes of object per cell and row (3.3 GB for PLE's 858k rows);
    # Arrow-backed columns keep them in one buffer. pipelines.training.dataset reads them without copying.
    return pd.ArrowDtype(arrow_type) if pa.types.is_list(arrow_type) else None


def feast_training_set(
    store: FeatureStore, data: Store, start: dt.date, end: dt.date, service: str = "esmm_v1"
) -> pd.DataFrame:
    """The same training set through Feast's ``get_historical_features`` (the reference implementation)."""
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
    return frame.sort_values(ORDER, kind="stable").reset_index(drop=True)
