"""Feature store benchmarks: feature computation, materialization, online lookup latency.

    .venv/bin/python benchmarks/feature_store.py [--compute-cases 1M,10M] [--lookups 300]

1. Feature computation (daily aggregates + snapshots) on one simulated, validated day of 1M and 10M
   impressions: DuckDB (what the platform uses) against a pandas version of the daily aggregates alone, in
   the same run (median of 3).
2. Materialization rows/s into the SQLite (local) and Redis (prod) online stores, on the 1M day.
3. Online lookup latency for 1 user + 200 items (feature service esmm_v1, user and item views), p50/p99 over
   `--lookups` requests after a warm-up: SDK on SQLite, SDK on Redis, and `feast serve` over HTTP (SQLite).

Needs PostgreSQL and Redis on 127.0.0.1 for the Redis figures (the prod profile).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.data.contract import Store
from pipelines.data.simulator import Simulator, SimulatorConfig
from pipelines.features.compute import FEATURE_TABLES, FeatureLayout, compute_daily_aggregates, compute_features
from pipelines.features.store import get_store, materialize_day, plan_and_apply
from pipelines.services import ensure_postgres_database
from pipelines.settings import get_settings
from pipelines.validation.validate import validate_day

DAY = dt.date(2026, 1, 1)
CASES = {"1M": (100_000, 1_000_000), "10M": (1_000_000, 10_000_000)}


def prepare(home: Path, users: int, impressions: int) -> Store:
    settings = get_settings(home=home)
    store = Store(settings.data_dir, "sim")
    Simulator(SimulatorConfig(days=1, users=users, impressions_per_day=impressions), store).run()
    validate_day(store, DAY, settings.reports_dir, threshold=1.0, docs=False)
    return store


def pandas_aggregates(store: Store) -> None:
    """The same three daily aggregates as compute_daily_aggregates, in pandas (parquet to parquet)."""
    frame = pd.read_parquet(
        store.partition_path("impressions", DAY, "clean"),
        columns=["user_id", "item_id", "event_time", "click", "conversion", "dwell_seconds"],
    )
    items = store.read_range("items", end=DAY, layer="clean", columns=["item_id", "category"]).to_pandas()
    with tempfile.TemporaryDirectory() as out:
        for key in ("user_id", "item_id"):
            agg = frame.groupby(key).agg(
                impressions=("click", "size"), clicks=("click", "sum"), conversions=("conversion", "sum")
            )
            agg.reset_index().to_parquet(Path(out) / f"{key}.parquet")
        clicks = frame[frame["click"] == 1].merge(items, on="item_id", how="left")
        clicks.sort_values(["user_id", "event_time", "item_id"])[
            ["user_id", "item_id", "category", "event_time"]
        ].to_parquet(Path(out) / "clicks.parquet")


def bench_compute(name: str, repeat: int) -> dict:
    users, impressions = CASES[name]
    with tempfile.TemporaryDirectory(prefix="featbench-") as tmp:
        home = Path(tmp)
        store = prepare(home, users, impressions)
        layout = FeatureLayout.for_dataset(home, "sim")
        duck, duck_aggregates, panda = [], [], []
        for _ in range(repeat):
            start = time.perf_counter()
            result = compute_features(store, layout, DAY)
            duck.append(time.perf_counter() - start)
            start = time.perf_counter()
            compute_daily_aggregates(store, layout, DAY)
            duck_aggregates.append(time.perf_counter() - start)
            start = time.perf_counter()
            pandas_aggregates(store)
            panda.append(time.perf_counter() - start)
        rows = store.read("impressions", DAY, "clean", columns=["click"]).num_rows
    return {
        "impressions": rows,
        "duckdb_all_features_s": statistics.median(duck),
        "impressions_per_s": rows / statistics.median(duck),
        "duckdb_daily_aggregates_only_s": statistics.median(duck_aggregates),
        "pandas_daily_aggregates_only_s": statistics.median(panda),
        "rows_written": result["rows"],
    }


def latencies(call, n: int) -> dict:
    for _ in range(10):
        call()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)), "n": n}


def lookup_features(store) -> tuple[list[str], list[str]]:
    service = store.get_feature_service("esmm_v1")
    user_views = {"user_profile_fv", "user_activity_fv"}
    item_views = {"item_stats_fv", "item_content_fv"}
    user_features, item_features = [], []
    for projection in service.feature_view_projections:
        refs = [f"{projection.name_to_use()}:{f.name}" for f in projection.features]
        if projection.name in user_views:
            user_features += refs
        elif projection.name in item_views:
            item_features += refs
    return user_features, item_features


def sdk_lookup(store, user: int, items: list[int]):
    user_features, item_features = lookup_features(store)

    def call():
        store.get_online_features(features=user_features, entity_rows=[{"user_id": user}]).to_dict()
        store.get_online_features(features=item_features, entity_rows=[{"item_id": i} for i in items]).to_dict()

    return call


def http_lookup(port: int, store, user: int, items: list[int]):
    user_features, item_features = lookup_features(store)

    def post(body: dict) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/get-online-features",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).read()

    def call():
        post({"features": user_features, "entities": {"user_id": [user]}})
        post({"features": item_features, "entities": {"item_id": items}})

    return call


def materialize_timed(store, layout: FeatureLayout) -> dict:
    rows = sum(len(pd.read_parquet(layout.path(t, DAY), columns=[])) for t in FEATURE_TABLES)
    start = time.perf_counter()
    materialize_day(store, layout, DAY)
    seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}


def bench_store(lookups: int) -> dict:
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="featbench-") as tmp:
        home = Path(tmp)
        store_data = prepare(home, *CASES["1M"])
        layout = FeatureLayout.for_dataset(home, "sim")
        compute_features(store_data, layout, DAY)
        items = pd.read_parquet(layout.path("item_stats", DAY))["item_id"].sample(200, random_state=0).tolist()
        user = int(pd.read_parquet(layout.path("user_activity", DAY))["user_id"].iloc[0])
        # Local profile: SQLite.
        local = get_settings(home=home)
        plan_and_apply(local)
        store = get_store(local)
        out["materialize_sqlite"] = materialize_timed(store, layout)
        out["sdk_sqlite"] = latencies(sdk_lookup(store, user, items), lookups)
        port = _free_port()
        env = {**os.environ, "COLDSTART_HOME": str(home), "COLDSTART_PROFILE": "local"}
        coldstart = str(Path(sys.executable).parent / "coldstart")
        server = subprocess.Popen(
            [coldstart, "feast", "serve", "-h", "127.0.0.1", "-p", str(port), "--no-access-log"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait(port)
            out["http_sqlite"] = latencies(http_lookup(port, store, user, items), lookups)
        finally:
            server.terminate()
            server.wait(timeout=30)
        # Prod profile: Redis online store, SQL registry in a throwaway PostgreSQL database.
        name = f"coldstart_bench_{uuid.uuid4().hex[:8]}"
        url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
        ensure_postgres_database(url)
        prod = get_settings(home=home / "prod", profile="prod", postgres_url=url, feast_project=name)
        (home / "prod").mkdir()
        os.symlink(home / "features", home / "prod" / "features")
        plan_and_apply(prod)
        redis_store = get_store(prod)
        try:
            out["materialize_redis"] = materialize_timed(redis_store, layout)
            out["sdk_redis"] = latencies(sdk_lookup(redis_store, user, items), lookups)
        finally:
            redis_store.teardown()
            _drop(name)
    return out


def _drop(name: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(port: int) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("feast serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--compute-cases", default="1M,10M")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "feature_store.json")
    opts = parser.parse_args()
    results = {"compute": {c: bench_compute(c, opts.repeat) for c in opts.compute_cases.split(",") if c}}
    results["store"] = bench_store(opts.lookups)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
