"""The prod profile reaches the real PostgreSQL and Redis on 127.0.0.1."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from pipelines.services import check_backends, check_postgres, check_redis, ensure_postgres_database
from pipelines.settings import get_settings

pytestmark = pytest.mark.prod

PG_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def prod_env(monkeypatch: pytest.MonkeyPatch):
    import sqlalchemy as sa

    name = f"coldstart_test_{uuid.uuid4().hex[:8]}"
    url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    monkeypatch.setenv("COLDSTART_PROFILE", "prod")
    monkeypatch.setenv("COLDSTART_POSTGRES_URL", url)
    monkeypatch.setenv("COLDSTART_REDIS_URL", "redis://127.0.0.1:6379/0")
    ensure_postgres_database(url)
    yield url
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_prod_backends_are_reachable(prod_env: str) -> None:
    import redis
    import sqlalchemy as sa

    settings = get_settings()
    assert settings.profile == "prod" and settings.airflow_db_url == f"{prod_env}_airflow"
    checks = {c.name: c for c in check_backends(settings)}
    assert all(c.ok for c in checks.values()), checks
    engine = sa.create_engine(settings.mlflow_tracking_uri)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE probe (k text primary key)"))
        conn.execute(sa.text("INSERT INTO probe VALUES ('written')"))
        assert conn.execute(sa.text("SELECT k FROM probe")).scalar() == "written"
    engine.dispose()
    client = redis.Redis.from_url(settings.redis_url)
    key = f"{settings.feast_project}:test:{uuid.uuid4().hex}"
    client.set(key, b"v", ex=60)
    assert client.get(key) == b"v"
    client.delete(key)


def test_doctor_command_on_prod(prod_env: str) -> None:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "coldstart"), "doctor"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PostgreSQL" in out.stdout and "Redis" in out.stdout


def test_unreachable_backends_are_reported_not_raised() -> None:
    assert not check_postgres("postgresql+psycopg2://postgres@127.0.0.1:1/none").ok
    assert not check_redis("redis://127.0.0.1:1/0").ok
