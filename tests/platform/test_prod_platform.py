"""The prod profile end to end: Airflow and MLflow on PostgreSQL, the CeleryExecutor with Redis as the broker,
Feast's online store on Redis (all on 127.0.0.1); the chain on one worker, then a second worker joins.

The chain runs once for the module (the ``chain`` fixture): the second-worker test reads out an experiment over
the days it validated, so it asks for it too and runs on its own."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.platform.client import CHAIN, now
from pipelines.platform.launcher import add_worker, platform_dir
from pipelines.serving.promote import staging_record

from .conftest import Platform, failures, run_chain, running_platform, states

pytestmark = [pytest.mark.prod, pytest.mark.slow]

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"
SUCCEEDED = re.compile(r"Task execute_workload\[\S+\] succeeded")


@pytest.fixture(scope="module")
def prod_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    import redis
    import sqlalchemy as sa

    name = f"coldstart_platform_{uuid.uuid4().hex[:8]}"
    overrides = {"profile": "prod", "postgres_url": f"{PG}/{name}", "redis_url": "redis://127.0.0.1:6379/0",
                 "feast_project": name}  # fmt: skip
    # One task per worker at a time, so that two tasks at once need both workers.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW__CELERY__WORKER_CONCURRENCY", "1")
        try:
            with running_platform(tmp_path_factory.mktemp("prod") / "home", **overrides) as platform:
                yield platform
                from pipelines.features.store import get_store

                get_store(platform.settings).teardown()
        finally:
            broker = redis.Redis.from_url("redis://127.0.0.1:6379/1")
            for key in broker.scan_iter(f"{name}:*"):
                broker.delete(key)
            broker.close()
            admin = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                for db in (name, f"{name}_airflow"):
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
            admin.dispose()


@pytest.fixture(scope="module")
def chain(prod_platform: Platform) -> dict[str, list[dict]]:
    """The runs of the whole Asset chain over the platform's days, on the one worker, triggered once."""
    return run_chain(prod_platform, timeout=1500)


def worker_log(platform: Platform, n: int) -> Path:
    return platform_dir(platform.settings) / "logs" / f"airflow-worker-{n}.log"


def test_the_chain_runs_on_celery_with_postgres_and_redis(
    prod_platform: Platform, chain: dict[str, list[dict]]
) -> None:
    import mlflow
    import sqlalchemy as sa

    client, settings, runs = prod_platform.client, prod_platform.settings, chain
    assert states(runs) == {dag: ["success"] for dag in CHAIN}, failures(client, runs)
    # Every task that ran went through the broker to the one worker (a skipped task, e.g. train_models' content
    # tower step when no tower is chosen, never reaches a worker).
    tasks = sum(ti["state"] == "success" for dag, rs in runs.items() for r in rs
                for ti in client.task_instances(dag, r["dag_run_id"]))  # fmt: skip
    assert len(SUCCEEDED.findall(worker_log(prod_platform, 1).read_text())) == tasks
    # Airflow's metadata and MLflow's registry are in PostgreSQL, each in its own database.
    engine = sa.create_engine(settings.airflow_db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM dag_run WHERE state = 'success'")).scalar() >= len(CHAIN)
    engine.dispose()
    assert settings.mlflow_tracking_uri.startswith("postgresql")
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    staging = mlflow.MlflowClient().get_model_version_by_alias("coldstart_esmm", "staging")
    assert staging_record(settings, "esmm")["version"] == str(staging.version)
    # Feast's online store is Redis: what the chain materialized answers a lookup by id.
    import pandas as pd

    from pipelines.features.compute import FeatureLayout
    from pipelines.features.store import get_store, online_features

    activity = pd.read_parquet(
        FeatureLayout.for_dataset(settings.home, "sim").path("user_activity", prod_platform.days[-1])
    )
    user = int(activity["user_id"].iloc[0])
    got = online_features(get_store(settings), "esmm_v1", user_id=user)
    assert got["values"]["view_count"] == [activity["view_count"].iloc[0]], got


def test_a_second_worker_joins_and_tasks_spread_over_both(
    prod_platform: Platform, chain: dict[str, list[dict]]
) -> None:
    client = prod_platform.client
    # The read-out reads the clean days the chain validated; without them it fails and retries, and the count of
    # tasks below would be off.
    assert states(chain)["validate_logs"] == ["success"], failures(client, chain)
    first = worker_log(prod_platform, 1)
    offset = len(first.read_text())
    assert add_worker(prod_platform.settings) == "airflow-worker-2"
    days = prod_platform.days
    # Only these two DAGs (the `chain` fixture ran the rest): their runs start together, so two tasks wait at the same
    # time, one per worker.
    for dag_id in CHAIN[1:]:
        client.call("PATCH", f"/dags/{dag_id}", {"is_paused": True})
    since = now()
    ab = {"start": days[0].isoformat(), "end": days[-1].isoformat(), "high_exposure_threshold": 100}
    validate = {"date": days[0].isoformat(), "end": days[-1].isoformat()}
    threads = [threading.Thread(target=client.trigger, args=("coldstart_ab_metrics", ab)),
               threading.Thread(target=client.trigger, args=("validate_logs", validate))]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pair = ("validate_logs", "coldstart_ab_metrics")
    runs = client.follow(pair, since, expect=pair, timeout=900)
    assert all(state == "success" for rs in states(runs).values() for state in rs), states(runs)
    on_first = len(SUCCEEDED.findall(first.read_text()[offset:]))
    on_second = len(SUCCEEDED.findall(worker_log(prod_platform, 2).read_text()))
    tasks = sum(len(client.task_instances(dag, r["dag_run_id"])) for dag, rs in runs.items() for r in rs)
    assert on_first + on_second == tasks
    assert on_first > 0 and on_second > 0, (on_first, on_second)
