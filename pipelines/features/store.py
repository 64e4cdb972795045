"""The Feast store of a profile: its ``feature_store.yaml``, plan/apply, materialization and lookups.

The declarations live in the repository's ``feature_repo/``; the store configuration (which online store,
registry and paths) comes from :class:`~pipelines.settings.Settings` and is written to
``<home>/feast/feature_store.yaml``, which every Feast call here is pointed at.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.data.contract import day_bounds, sql_file_list
from pipelines.features.compute import FeatureLayout
from pipelines.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

FEATURE_REPO = Path(__file__).resolve().parents[2] / "feature_repo"
MATERIALIZE_OVERLAP = dt.timedelta(days=1)


class DestructivePlanError(RuntimeError):
    """``feast plan`` would delete registered objects and that was not allowed."""


def store_yaml(settings: Settings) -> Path:
    """Write the profile's ``feature_store.yaml`` (idempotent) and return its path."""
    import yaml

    path = settings.feast_repo_dir / "feature_store.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(settings.feast_store_config(), sort_keys=True)
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


def feast_invocation(settings: Settings, dataset: str = "sim") -> tuple[list[str], dict[str, str]]:
    """The ``feast`` command prefix (repo and store file) and environment for this profile and dataset."""
    binary = str(Path(sys.executable).parent / "feast")
    # feature_repo/data_sources.py reads the home and the dataset from these when Feast imports it.
    env = {**os.environ, **settings.environ(feature_dataset=dataset)}
    return [binary, "-c", str(FEATURE_REPO), "-f", str(store_yaml(settings))], env


def feast_cli(settings: Settings, *args: str, dataset: str = "sim") -> str:
    """Run the ``feast`` CLI on ``feature_repo/`` with this profile's store; return its output.

    Raises:
        RuntimeError: with Feast's own output when the command fails.
    """
    prefix, env = feast_invocation(settings, dataset)
    out = subprocess.run([*prefix, *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"`feast {' '.join(args)}` failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout + out.stderr


def plan_and_apply(settings: Settings, dataset: str = "sim", allow_destructive: bool = False) -> dict[str, list[str]]:
    """``feast plan``; refuse deletions unless allowed; then ``feast apply`` (one process: :mod:`.plan_apply`).

    Returns:
        The planned changes by kind (``created``, ``updated``, ``deleted``).

    Raises:
        DestructivePlanError: the plan deletes registered objects and ``allow_destructive`` is false (nothing
            was applied).
        RuntimeError: with Feast's own output when plan or apply fails.
    """
    import json

    from pipelines.features.plan_apply import ALLOW, REFUSED

    prefix, env = feast_invocation(settings, dataset)
    command = [sys.executable, "-m", "pipelines.features.plan_apply", *([ALLOW] if allow_destructive else []),
               *prefix[1:]]  # fmt: skip
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    if out.returncode not in (0, REFUSED):
        raise RuntimeError(f"`feast plan` / `feast apply` failed:\n{out.stdout}\n{out.stderr}")
    changes = json.loads(out.stdout.strip().splitlines()[-1])
    if out.returncode == REFUSED:
        raise DestructivePlanError(
            "feast plan would delete: " + "; ".join(changes["deleted"]) + ". Re-run with allow_destructive "
            "(CLI: --allow-destructive, DAG Param allow_destructive) if that is intended."
        )
    return changes


def import_feast() -> None:
    """Import Feast without typeguard's instrumentation at import time.

    Feast decorates its classes with typeguard's ``@typechecked``, which re-parses and recompiles a module's source
    for every decorated function: importing Feast took 11-14 s of every process that used it (each training,
    evaluation and materialization task; typeguard issue #468). During Feast's own import the decorator lets its
    target through unchanged, as it does under ``python -O``; it is restored afterwards. What is lost is Feast's
    run-time check of argument types in these processes, which the feature repository's definitions (checked by
    ``feast plan`` / ``feast apply`` in their own processes) and the tests cover.
    """
    if "feast" in sys.modules:
        return
    import typeguard

    def passthrough(target=None, **_options):
        return target if target is not None else passthrough

    original = typeguard.typechecked
    typeguard.typechecked = passthrough
    try:
        import feast  # noqa: F401
    finally:
        typeguard.typechecked = original


def get_store(settings: Settings, dataset: str = "sim") -> FeatureStore:
    """A Python SDK handle on the profile's store (what other teams use).

    The handle reads the registry, which holds the source paths of the dataset last planned and applied
    (:func:`plan_and_apply`); ``dataset`` is kept for the callers that name it.
    """
    import_feast()
    from feast import FeatureStore

    return FeatureStore(repo_path=str(FEATURE_REPO), fs_yaml_file=store_yaml(settings))


# Views whose writer materializes its own rows: the content tower's vectors are written (and loaded online) when a
# tower becomes champion and at publish time (pipelines.features.content_tower), not by the daily snapshots; a
# platform that never trained a tower has no file for it.
OWN_WRITER_VIEWS = ("item_content_tower_fv",)


def materialize_day(
    store: FeatureStore,
    layout: FeatureLayout,
    day: dt.date,
    overlap: dt.timedelta = MATERIALIZE_OVERLAP,
    engine: str = "duckdb",
) -> tuple[dt.datetime, dt.datetime]:
    """Materialize the snapshots of ``day`` (stamped at its end), re-reading ``overlap`` before for late data.

    The window always runs to the newest snapshot computed so far, so re-running an older day (a backfill)
    never puts older values over newer ones: the online store ends in the same state either way.

    Args:
        engine: ``duckdb`` (default) or ``feast``; see :func:`materialize_window`.
    """
    newest = max([day, *layout.days("user_profile")])
    start = day_bounds(day)[1] - overlap
    end = day_bounds(newest)[1] + dt.timedelta(seconds=1)
    views = [fv.name for fv in store.list_feature_views() if fv.name not in ("item_content_fv", *OWN_WRITER_VIEWS)]
    materialize_window(store, views, start, end, engine)
    # Item content is stamped at publish time: cover every publish time in the day's file (the first day's
    # file also holds the items published before the logs start).
    content = layout.path("item_content", day)
    if content.is_file():
        stamps = pq.read_table(content, columns=["event_timestamp"]).column(0)
        if len(stamps):
            first = min(pc.min(stamps).as_py(), start)
            materialize_window(store, ["item_content_fv"], first, end, engine)
    return start, end


def materialize_window(
    store: FeatureStore, views: list[str], start: dt.datetime, end: dt.datetime, engine: str = "duckdb"
) -> None:
    """Write the latest row per entity stamped in [start, end] of each view to the online store.

    What ``FeatureStore.materialize`` does, with the offline read done by DuckDB:

    * ``engine="feast"`` calls ``store.materialize``. Its file (Dask) offline store reads every daily file of the
      source, sorts it, and hashes it by pickling object columns: 73 s of a 1M-impression week went there,
      13 s to the online store;
    * ``engine="duckdb"`` (default) selects the same rows with one DuckDB query over the files that can hold
      them, writes them through ``store.write_to_online_store`` (the same conversion and online-store writer
      ``materialize`` ends in) and records the interval in the registry, as ``materialize`` does. Tested to
      leave the online store byte for byte as ``engine="feast"`` does.
    """
    if engine == "feast":
        store.materialize(start_date=start, end_date=end, feature_views=views)
        return
    if engine != "duckdb":
        raise ValueError(f"unknown materialization engine {engine!r}; choose duckdb or feast")
    import duckdb

    from pipelines.features.training_set import ViewJoin

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for name in views:
        view = store.get_feature_view(name)
        source = ViewJoin.of(view)
        # A file named for day d holds rows stamped at the end of d at the latest: older files cannot match.
        files = source.source_files(since=start.date() - dt.timedelta(days=1))
        if files:
            keys = ", ".join(f'"{k}"' for k in source.join_keys)
            columns = ", ".join(f'"{c}"' for c in [*source.join_keys, source.timestamp_field, *source.features])
            stamp = source.timestamp_field
            table = con.sql(
                f"SELECT {columns} FROM read_parquet({sql_file_list(files)}, union_by_name = true) "
                f"WHERE \"{stamp}\" BETWEEN TIMESTAMPTZ '{start.isoformat()}' AND TIMESTAMPTZ '{end.isoformat()}' "
                f'QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY "{stamp}" DESC) = 1'
            ).to_arrow_table()
            if table.num_rows:
                # One chunk per column: Feast 0.67's ingestion of a multi-chunk Arrow-backed frame writes only
                # some of the rows (found by the parity test). Arrow-backed, so integer features stay integers.
                store.write_to_online_store(name, table.combine_chunks().to_pandas(types_mapper=pd.ArrowDtype))
        store.registry.apply_materialization(view, store.project, start, end)
    con.close()


def materialized_through(store: FeatureStore) -> dt.datetime | None:
    """How far the online store is loaded: the end of the newest materialized interval, the earliest over the
    feature views (item content, stamped at publish time, and the views with writers of their own are left out),
    or None while a view has none."""
    ends = []
    for view in store.list_feature_views():
        if view.name in ("item_content_fv", *OWN_WRITER_VIEWS):
            continue
        if not view.materialization_intervals:
            return None
        ends.append(max(end for _start, end in view.materialization_intervals))
    return min(ends) if ends else None


def online_features(
    store: FeatureStore, service: str, user_id: int | None = None, item_ids: list[int] | None = None
) -> dict[str, Any]:
    """Online lookup for one user and/or a list of items through a feature service.

    Unknown ids come back with null values (status NOT_FOUND), never an error. With both a user and items,
    the user's features are repeated for each item row.

    Returns:
        ``{"values": {name: [...]}, "statuses": {name: ["PRESENT" | "NOT_FOUND" | ...]}}``, one entry per row.
    """
    feature_service = store.get_feature_service(service)
    projections = feature_service.feature_view_projections
    item_ids = list(item_ids or [])
    if not item_ids and user_id is None:
        raise ValueError("give a user_id, item_ids or both")
    rows: list[dict[str, int]] = [{"item_id": i} for i in item_ids] or [{}]
    if user_id is not None:
        rows = [row | {"user_id": user_id} for row in rows]
    if item_ids and any(p.name == "author_stats_fv" for p in projections):
        # Authors are reached through their items: look the author of each item up first.
        authors = store.get_online_features(
            features=["item_content_fv:author_id"], entity_rows=[{"item_id": i} for i in item_ids]
        ).to_dict()["author_id"]
        rows = [row | {"author_id": a if a is not None else -1} for row, a in zip(rows, authors, strict=True)]
    entity_keys = set(rows[0])
    wanted = [p for p in projections if set(_join_keys(store, p.name)) <= entity_keys]
    features = [f"{p.name_to_use()}:{f.name}" for p in wanted for f in p.features]
    response = store.get_online_features(features=features, entity_rows=rows)
    names = list(response.proto.metadata.feature_names.val)
    statuses = {name: _statuses(result) for name, result in zip(names, response.proto.results, strict=True)}
    return {"values": response.to_dict(), "statuses": statuses}


def _statuses(result) -> list[str]:
    """Status names of one feature's values.

    Feast 0.67's Redis store answers an unknown key with an empty value stamped at the epoch and status
    PRESENT (the SQLite store says NOT_FOUND); both mean "no row", so both are reported as NOT_FOUND.
    """
    from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

    out = []
    for value, status, stamp in zip(result.values, result.statuses, result.event_timestamps, strict=False):
        empty = value.WhichOneof("val") is None and stamp.seconds == 0 and stamp.nanos == 0
        out.append("NOT_FOUND" if status == FieldStatus.PRESENT and empty else FieldStatus.Name(status))
    return out


def _join_keys(store: FeatureStore, view: str) -> list[str]:
    fv = store.get_feature_view(view)
    return [column.name for column in fv.entity_columns]


def push_item_stats(store: FeatureStore, stats: pd.DataFrame) -> None:
    """Near-line update of item stats (new items change by the hour) straight into the online store.

    Args:
        stats: rows of the ``item_stats`` table (``item_id``, ``event_timestamp`` and every stat column).

    Raises:
        ValueError: naming the columns that are missing.
    """
    from feast.data_source import PushMode

    expected = {"item_id", "event_timestamp", *(f.name for f in store.get_feature_view("item_stats_fv").features)}
    if missing := sorted(expected - set(stats.columns)):
        raise ValueError(f"item stats push is missing columns {missing}")
    store.push("item_stats_push_source", stats[sorted(expected)], to=PushMode.ONLINE)
