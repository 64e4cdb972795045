"""A running platform (`coldstart platform up`) on free ports, with a few simulated days, shared by a module."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.platform.client import CHAIN, AirflowClient, now
from pipelines.platform.launcher import ADMIN_USER, admin_password, airflow_url, down, up
from pipelines.serving.bento import free_port
from pipelines.settings import Settings, get_settings

from ..conftest import run_sim

DAYS = [dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(4)]
# What the chain runs with in tests (handed downstream through the Asset events): one small model, few resamples.
TEST_CHAIN = {
    "train_models": {"models": ["esmm"], "epochs": 2, "lr": 0.003},
    "evaluate_models": {"n_bootstrap": 0, "allow_skipped_cold_checks": True},  # 1,500 users: small cold slices
}


@dataclass
class Platform:
    settings: Settings
    client: AirflowClient
    days: list[dt.date]
    env: dict[str, str]  # the COLDSTART_* variables that point a `coldstart` command at this platform


@contextlib.contextmanager
def running_platform(
    home: Path, workers: int = 1, days: list[dt.date] = DAYS, users: int = 1500, **settings_overrides
) -> Iterator[Platform]:
    """Simulate ``days`` into ``home``, `platform up` on free ports, yield; always `platform down`."""
    # A killed task's retry comes 2 s later, not the default 30 s (the retry-after-kill test waits for it).
    settings_overrides = {"retry_delay_s": 2} | settings_overrides
    settings = get_settings(home=home, airflow_port=free_port(), mlflow_port=free_port(), **settings_overrides)
    env = settings.environ()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        run_sim(settings.data_dir, days=len(days), users=users, seed=5, start_date=days[0])
        try:
            up(settings, workers=workers, timeout=300)
            client = AirflowClient(airflow_url(settings), ADMIN_USER, admin_password(settings))
            client.wait_for_dags(CHAIN)
            yield Platform(settings, client, days, env)
        finally:
            down(settings)


def chain_conf(days: list[dt.date], **chain) -> dict:
    """The conf of a `validate_logs` run over ``days`` that sets the test chain's Params downstream."""
    return {"date": days[0].isoformat(), "end": days[-1].isoformat(), "chain": TEST_CHAIN | chain}


def states(runs: dict[str, list[dict]]) -> dict[str, list[str]]:
    return {dag: [r["state"] for r in rs] for dag, rs in runs.items()}


def run_chain(platform: Platform, timeout: float) -> dict[str, list[dict]]:
    """Trigger the whole Asset chain over the platform's days and return each DAG's runs once it is quiet.

    A module's ``chain`` fixture calls it once, so that every test that needs what the chain leaves behind
    (validated days, features, a staged champion) declares it instead of relying on the tests before it.
    """
    since = now()
    platform.client.trigger("validate_logs", chain_conf(platform.days))
    return platform.client.follow(CHAIN, since, expect=CHAIN, timeout=timeout)


def failures(client: AirflowClient, runs: dict[str, list[dict]]) -> dict[str, str]:
    """Why each run that did not succeed failed (an assertion message)."""
    return {dag: client.failure(r) for dag, rs in runs.items() for r in rs if r["state"] != "success"}


def local_state(settings: Settings) -> dict:
    """Everything a chain run may write, fingerprinted: partitions and feature files (bytes), the SQLite online
    store (rows), the registry (versions and aliases), the number of MLflow runs, the staging records."""
    import mlflow

    out: dict = {}
    for root in ("data", "features"):
        for path in sorted((settings.home / root).rglob("*.parquet")):
            out[str(path.relative_to(settings.home))] = hashlib.sha1(path.read_bytes()).hexdigest()
    with sqlite3.connect(settings.home / "feast" / "online_store.db") as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            rows = sorted(db.execute(f"SELECT entity_key, feature_name, value, event_ts FROM {table}").fetchall())
            out[f"online/{table}"] = hashlib.sha1(repr(rows).encode()).hexdigest()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    client = mlflow.MlflowClient()
    for model in client.search_registered_models():
        versions = sorted(v.version for v in client.search_model_versions(f"name = '{model.name}'"))
        out[f"registry/{model.name}"] = {"versions": versions, "aliases": model.aliases}
    out["mlflow_runs"] = len(mlflow.search_runs(search_all_experiments=True, output_format="list"))
    for path in sorted((settings.home / "serving").glob("*.json")):
        out[f"serving/{path.name}"] = json.loads(path.read_text())
    return out


@pytest.fixture(scope="module")
def local_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("platform") / "home") as platform:
        yield platform
