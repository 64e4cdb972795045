"""Feast on the local profile: point-in-time correctness, materialization, online lookups, the HTTP server."""

import datetime as dt
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feast import FeatureView, Field
from feast.types import Int64

from pipelines.features.store import (
    DestructivePlanError,
    get_store,
    materialize_day,
    online_features,
    plan_and_apply,
    push_item_stats,
)
from pipelines.features.training_set import build_training_set, feast_training_set

from .conftest import Platform


@pytest.fixture(scope="module")
def training(platform: Platform, feast_store) -> pd.DataFrame:
    return build_training_set(feast_store, platform.data, platform.days[1], platform.days[-1], "ple_uie_v1")


def test_training_set_keeps_every_impression(platform: Platform, training: pd.DataFrame) -> None:
    clean = platform.data.read_range("impressions", platform.days[1], platform.days[-1], "clean")
    assert len(training) == clean.num_rows
    assert training[["request_id", "position"]].duplicated().sum() == 0
    # Brand-new items (published the same day) are kept, with null stats: exactly the cold-start rows.
    assert training["exposures_7d"].isna().any() and training["category"].notna().all()


def _cells(column: pd.Series) -> list:
    """Comparable cells: lists as tuples, every kind of missing as None."""
    out = []
    for value in column.astype(object):
        if isinstance(value, list | np.ndarray):
            out.append(tuple(np.asarray(value).tolist()))
        else:
            out.append(None if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))
                       else value)  # fmt: skip
    return out


def test_the_duckdb_join_equals_feasts_get_historical_features(platform: Platform, feast_store) -> None:
    """The training set's DuckDB ASOF join gives, row for row and cell for cell, what Feast's offline store gives."""
    start, end = platform.days[1], platform.days[2]
    ours = build_training_set(feast_store, platform.data, start, end, "ple_uie_v1")
    feast = feast_training_set(feast_store, platform.data, start, end, "ple_uie_v1")
    assert list(ours.columns) == list(feast.columns) and len(ours) == len(feast) > 1000
    for column in ours.columns:
        if column == "event_timestamp":  # microseconds here, nanoseconds from Feast: same instants
            assert (ours[column].to_numpy() == feast[column].to_numpy()).all()
            continue
        assert _cells(ours[column]) == _cells(feast[column]), column
    # The join can tell the cases apart: brand-new items have content but no stats, and some users no history.
    assert ours["exposures_7d"].isna().any() and ours["exposures_7d"].notna().any()
    assert ours["recent_item_ids"].isna().any() and ours["recent_item_ids"].notna().any()


def test_a_training_set_can_keep_only_some_features(platform: Platform, feast_store, training) -> None:
    day = platform.days[-1]
    some = build_training_set(feast_store, platform.data, day, day, "ple_uie_v1", ["view_count", "content_vector"])
    assert list(some.columns)[-2:] == ["view_count", "content_vector"] and "keywords" not in some
    full = training[training["event_time"].dt.date == day].reset_index(drop=True)
    assert _cells(some["view_count"]) == _cells(full["view_count"])
    with pytest.raises(ValueError, match="no features"):
        build_training_set(feast_store, platform.data, day, day, "esmm_v1", ["recent_item_ids"])


def test_no_feature_computed_after_an_impression_is_joined_to_it(platform: Platform, training: pd.DataFrame) -> None:
    imps = platform.data.read_range("impressions", layer="clean", columns=["user_id", "event_time"]).to_pandas()
    imps["day"] = imps["event_time"].dt.date
    per_day = imps.groupby(["user_id", "day"]).size()
    first_day = imps.groupby("user_id")["day"].min()
    day = training["event_time"].dt.date
    previous = day - dt.timedelta(days=1)
    expected = [
        per_day.get((u, p), 0) if first_day[u] <= p else np.nan
        for u, p in zip(training["user_id"], previous, strict=True)
    ]
    got = training["impressions_1d"].astype("float64").to_numpy()
    np.testing.assert_array_equal(got, np.asarray(expected, dtype="float64"))
    # A same-day count would differ for most rows: the check can fail.
    same_day = [per_day.get((u, d), 0) for u, d in zip(training["user_id"], day, strict=True)]
    assert (np.asarray(same_day) != np.nan_to_num(got, nan=-1)).mean() > 0.5
    # Signup age is never ahead of the impression.
    signup = platform.data.read_range("users", layer="clean", columns=["user_id", "signup_time"]).to_pandas()
    signed_up = training["user_id"].map(signup.set_index("user_id")["signup_time"])
    age_now = (training["event_time"] - signed_up) / pd.Timedelta(days=1)
    known = training["days_since_signup"].notna()
    assert (training.loc[known, "days_since_signup"] <= age_now[known]).all()


def online_dump(platform: Platform) -> list:
    path = platform.settings.feast_repo_dir / "online_store.db"
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return [(t, sorted(db.execute(f'SELECT entity_key, feature_name, value, event_ts FROM "{t}"'))) for t in tables]


def test_materializing_twice_gives_the_same_online_state(platform: Platform, feast_store) -> None:
    before = online_dump(platform)
    assert sum(len(rows) for _, rows in before) > 1000
    materialize_day(feast_store, platform.layout, platform.days[-1])
    materialize_day(feast_store, platform.layout, platform.days[-2])
    assert online_dump(platform) == before


def test_duckdb_materialization_leaves_the_online_store_as_feasts_materialize_does(
    platform: Platform, feast_store
) -> None:
    """The fixture materialized every day with the DuckDB engine; Feast's own materialize, from empty, agrees."""
    ours = online_dump(platform)
    path = platform.settings.feast_repo_dir / "online_store.db"
    with sqlite3.connect(path) as db:
        for table, _ in ours:
            db.execute(f'DELETE FROM "{table}"')
    assert sum(len(rows) for _, rows in online_dump(platform)) == 0
    for day in platform.days:
        materialize_day(feast_store, platform.layout, day, engine="feast")
    feasts = online_dump(platform)
    assert sum(len(rows) for _, rows in feasts) > 1000
    assert [t for t, _ in ours] == [t for t, _ in feasts]
    for (table, a), (_, b) in zip(ours, feasts, strict=True):
        assert a == b, table
    with pytest.raises(ValueError, match="unknown materialization engine"):
        materialize_day(feast_store, platform.layout, platform.days[-1], engine="spark")


def test_online_values_equal_the_latest_offline_values(platform: Platform, feast_store) -> None:
    last = platform.days[-1]
    activity = pd.read_parquet(platform.layout.path("user_activity", last)).sample(25, random_state=1)
    stats = pd.read_parquet(platform.layout.path("item_stats", last)).sample(25, random_state=1)
    for _, row in activity.iterrows():
        got = online_features(feast_store, "esmm_v1", user_id=int(row["user_id"]))["values"]
        for column in ("impressions_7d", "clicks_30d", "view_count"):
            assert got[column] == [row[column]], (row["user_id"], column)
    got = online_features(feast_store, "esmm_v1", item_ids=[int(i) for i in stats["item_id"]])["values"]
    np.testing.assert_allclose(got["ctr_smoothed_7d"], stats["ctr_smoothed_7d"])
    assert got["exposures_total"] == stats["exposures_total"].tolist()


def test_unknown_entities_come_back_null_with_not_found(feast_store) -> None:
    result = online_features(feast_store, "ple_uie_v1", user_id=10**12, item_ids=[10**12, 0])
    values, statuses = result["values"], result["statuses"]
    assert values["view_count"] == [None, None] and set(statuses["view_count"]) == {"NOT_FOUND"}
    assert values["category"][0] is None and statuses["category"] == ["NOT_FOUND", "PRESENT"]


def test_plan_refuses_an_unexpected_destructive_change(platform: Platform, feast_store) -> None:
    # Someone registered a view by hand that the repository does not declare: applying the repo would delete it.
    stray = FeatureView(
        name="stray_fv",
        entities=[feast_store.get_entity("user")],
        schema=[Field(name="view_count", dtype=Int64)],
        source=feast_store.get_feature_view("user_activity_fv").batch_source,
    )
    feast_store.apply([stray])
    with pytest.raises(DestructivePlanError, match="stray_fv"):
        plan_and_apply(platform.settings)
    assert "stray_fv" in {fv.name for fv in get_store(platform.settings).list_feature_views()}
    changes = plan_and_apply(platform.settings, allow_destructive=True)
    assert any("stray_fv" in change for change in changes["deleted"])
    assert "stray_fv" not in {fv.name for fv in get_store(platform.settings).list_feature_views()}


def test_promotion_waits_for_the_online_store_to_hold_the_newest_clean_day(platform: Platform, feast_store,
                                                                         monkeypatch) -> None:  # fmt: skip
    """Materialization runs beside training: a ranker's promotion must not go live before it has loaded."""
    import pipelines.features.store as feature_store
    from pipelines.data.contract import Store, day_bounds
    from pipelines.serving.promote import PromotionError, await_online_store

    newest = Store(platform.settings.data_dir, "sim").partitions("impressions", layer="clean")[-1]
    through = feature_store.materialized_through(feast_store)
    assert through is not None and through >= day_bounds(newest)[1]
    await_online_store(platform.settings, timeout_s=0)  # loaded: returns at once
    behind = day_bounds(newest)[1] - dt.timedelta(days=1)
    monkeypatch.setattr(feature_store, "materialized_through", lambda store: behind)
    reason = re.escape(f"holds features through {behind}, not through the newest clean day {newest}")
    with pytest.raises(PromotionError, match=reason):
        await_online_store(platform.settings, timeout_s=0.2, poll_s=0.1)


def test_a_failing_plan_applies_nothing_and_keeps_feasts_reason(tmp_path: Path) -> None:
    import subprocess
    import sys

    missing = tmp_path / "feature_store.yaml"
    out = subprocess.run([sys.executable, "-m", "pipelines.features.plan_apply", "-c", str(tmp_path), "-f",
                          str(missing)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 1, out
    assert f"Can't find feature repo configuration file at {missing}" in out.stdout
    assert "{" not in out.stdout  # no JSON of changes: nothing was planned or applied


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_feast_serve_answers_http_lookups(platform: Platform, feast_store) -> None:
    """Start `feast serve` on 127.0.0.1 and fetch features the way another team would."""
    port = _free_port()
    coldstart = str(Path(sys.executable).parent / "coldstart")
    env = {**os.environ, "COLDSTART_HOME": str(platform.settings.home), "COLDSTART_PROFILE": "local"}
    server = subprocess.Popen(
        [coldstart, "feast", "serve", "-h", "127.0.0.1", "-p", str(port), "--no-access-log"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()[-3000:]
                assert time.time() < deadline, "feast serve did not come up"
                time.sleep(0.5)
        user = int(pd.read_parquet(platform.layout.path("user_activity", platform.days[-1]))["user_id"].iloc[0])
        body = {
            "features": ["user_activity_fv:view_count", "user_profile_fv:is_new_user"],
            "entities": {"user_id": [user, 10**12]},
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/get-online-features",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        reply = json.loads(urllib.request.urlopen(request, timeout=10).read())
        names = reply["metadata"]["feature_names"]
        results = dict(zip(names, reply["results"], strict=True))
        expected = online_features(feast_store, "esmm_v1", user_id=user)["values"]["view_count"][0]
        assert results["view_count"]["values"] == [expected, None]
        assert results["view_count"]["statuses"] == ["PRESENT", "NOT_FOUND"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_push_updates_new_item_stats_online(platform: Platform, feast_store) -> None:
    stats = pd.read_parquet(platform.layout.path("item_stats", platform.days[-1]))
    newest = stats.sort_values("age_hours").head(1).copy()
    item = int(newest["item_id"].iloc[0])
    newest["exposures_total"] += 1000
    newest["event_timestamp"] += pd.Timedelta(hours=3)
    push_item_stats(feast_store, newest)
    got = online_features(feast_store, "esmm_v1", item_ids=[item])["values"]["exposures_total"]
    assert got == [int(newest["exposures_total"].iloc[0])]
    with pytest.raises(ValueError, match="missing columns"):
        push_item_stats(feast_store, newest.drop(columns=["age_hours"]))
