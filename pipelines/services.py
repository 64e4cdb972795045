"""Reachability checks for the backends a profile uses (PostgreSQL and Redis in ``prod``)."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.settings import Settings


@dataclass(frozen=True)
class Check:
    """Outcome of one backend check."""

    name: str
    ok: bool
    detail: str


def ensure_postgres_database(url: str) -> None:
    """Create the database named in ``url`` if it does not exist (connects to ``postgres`` to do so)."""
    import sqlalchemy as sa

    target = sa.engine.make_url(url)
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": target.database}
            ).scalar()
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{target.database}"'))
    finally:
        admin.dispose()


def check_postgres(url: str) -> Check:
    import sqlalchemy as sa

    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            version = conn.execute(sa.text("SHOW server_version")).scalar()
        return Check("postgres", True, f"PostgreSQL {version} at {engine.url.render_as_string(hide_password=True)}")
    except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
        return Check("postgres", False, f"cannot reach {engine.url.render_as_string(hide_password=True)}: {exc}")
    finally:
        engine.dispose()


def check_redis(url: str) -> Check:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        info = client.info("server")
        return Check("redis", True, f"Redis {info['redis_version']} at {url}")
    except Exception as exc:  # noqa: BLE001
        return Check("redis", False, f"cannot reach {url}: {exc}")
    finally:
        client.close()


def check_backends(settings: Settings) -> list[Check]:
    """Check every backend the profile needs; the local profile needs only a writable home."""
    checks = []
    try:
        home = settings.ensure_home()
        checks.append(Check("home", True, str(home)))
    except Exception as exc:  # noqa: BLE001
        checks.append(Check("home", False, str(exc)))
    if settings.profile == "prod":
        checks.append(check_postgres(settings.postgres_url))
        checks.append(check_redis(settings.redis_url))
    return checks
