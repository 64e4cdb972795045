"""Feast on the prod profile: SQL registry on PostgreSQL, online store on Redis (both on 127.0.0.1)."""

import uuid

import pandas as pd
import pytest

from pipelines.features.store import get_store, materialize_day, online_features, plan_and_apply
from pipelines.services import ensure_postgres_database

from .conftest import build_platform

pytestmark = pytest.mark.prod


@pytest.fixture
def prod_platform(tmp_path):
    import sqlalchemy as sa

    name = f"coldstart_feast_{uuid.uuid4().hex[:8]}"
    url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    ensure_postgres_database(url)
    platform = build_platform(
        tmp_path / "home", profile="prod", postgres_url=url, redis_url="redis://127.0.0.1:6379/0", feast_project=name
    )
    yield platform
    try:
        get_store(platform.settings).teardown()
    finally:
        admin = sa.create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_redis_online_round_trip(prod_platform) -> None:
    import redis

    settings = prod_platform.settings
    assert settings.feast_store_config()["online_store"]["type"] == "redis"
    plan_and_apply(settings)
    store = get_store(settings)
    last = prod_platform.days[-1]
    materialize_day(store, prod_platform.layout, last)
    client = redis.Redis.from_url(settings.redis_url)
    assert any(True for _ in client.scan_iter(count=1000)), "nothing was written to Redis"
    activity = pd.read_parquet(prod_platform.layout.path("user_activity", last)).head(10)
    got = online_features(store, "esmm_v1", item_ids=None, user_id=int(activity["user_id"].iloc[0]))
    assert got["values"]["view_count"] == [activity["view_count"].iloc[0]]
    unknown = online_features(store, "esmm_v1", user_id=10**12)
    assert unknown["values"]["view_count"] == [None], unknown
    assert unknown["statuses"]["view_count"] == ["NOT_FOUND"], unknown
    # The registry lives in PostgreSQL: a fresh handle sees the applied objects.
    assert {fs.name for fs in get_store(settings).list_feature_services()} == {"esmm_v1", "ple_uie_v1", "melu_v1"}
