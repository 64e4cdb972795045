"""The content tower through the platform: trained by ``train_models``' call (``pipelines.training.api.train``),
made champion by its own gate, its vectors of every item written to Feast and served online, and a newly
published item's vector written online at publish time by the near-line writer, whose tick reads its predicted
quality back as the item's exposure prior."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from pipelines.data.contract import day_bounds
from pipelines.features.content_tower import TABLE, VIEW, tower_publisher
from pipelines.features.store import get_store
from pipelines.serving.content_vectors import load_tower
from pipelines.serving.nearline import NearlineState
from pipelines.serving.nearline_backends import SqliteBackend
from pipelines.serving.nearline_ingest import feast_content_quality, ingest_day
from pipelines.training.api import train
from pipelines.training.config import TrainRequest

from .conftest import Platform, apply_and_materialize, build_platform

TINY = {"model": {"dim": 8, "embed_dim": 4, "hidden": [16]}, "triplets": {"max_triplets": 3000},
        "train": {"epochs": 5}}  # fmt: skip
FEATURES = [f"{VIEW}:content_tower_vector", f"{VIEW}:content_quality", f"{VIEW}:content_tower_version"]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    """A platform of its own, applied and materialized: the champion tower this module makes must not change how
    the session's shared platform scores new items in other modules."""
    own = build_platform(tmp_path_factory.mktemp("tower_platform"))
    apply_and_materialize(own)
    return own


@pytest.fixture(scope="module")
def trained(platform: Platform) -> dict:
    """The tower trained on the first three days, as the DAG's `train_upstream` task trains it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COLDSTART_HOME", str(platform.settings.home))
        request = TrainRequest(dataset="sim", end=platform.days[2], window_days=3, overrides=TINY)
        return train("content_tower", request)


def online(platform: Platform, item_ids: list[int]) -> pd.DataFrame:
    rows = [{"item_id": int(i)} for i in item_ids]
    return pd.DataFrame(get_store(platform.settings).get_online_features(features=FEATURES, entity_rows=rows).to_dict())


def test_the_tower_becomes_champion_and_every_item_is_served_online(platform: Platform, trained: dict) -> None:
    client = mlflow.MlflowClient(platform.settings.mlflow_tracking_uri)
    version = client.get_model_version_by_alias("coldstart_content_tower", "champion")
    assert trained["gate"]["passed"] and str(version.version) == trained["version"]
    assert version.tags["gate"] == "passed" and "held-out triplet accuracy" in version.tags["gate_reason"]

    table = pd.read_parquet(platform.layout.path(TABLE, platform.days[2]))
    assert len(table) == trained["features"]["rows"] > 0
    # Stamped at the window's end: a point-in-time join before it never sees this tower's vectors.
    assert (table["event_timestamp"] == day_bounds(platform.days[2])[1]).all()
    served = online(platform, table["item_id"].head(5).tolist())
    assert (served["content_tower_version"] == trained["version"]).all()
    np.testing.assert_allclose([np.linalg.norm(v) for v in served["content_tower_vector"]], 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.stack(served["content_tower_vector"]),
                               np.stack(table["content_tower_vector"].head(5)), rtol=1e-6)  # fmt: skip


def test_a_newly_published_item_gets_its_vector_online_at_publish_time(
    platform: Platform, trained: dict, tmp_path
) -> None:
    day = platform.days[3]  # after the window: its items are not in the tower's table
    items = platform.data.read("items", day, "clean").to_pandas()
    fresh = items["item_id"].head(3).tolist()
    assert online(platform, fresh)["content_tower_vector"].isna().all()
    tower = load_tower(platform.settings)
    store = get_store(platform.settings)
    hook = tower_publisher(store, tower, platform.data)
    with NearlineState(SqliteBackend(tmp_path / "nearline.sqlite")) as state:  # not the session's shared state
        counts = ingest_day(state, platform.data, day, on_publish=hook, content_quality=feast_content_quality(store))
    assert counts["embedded"] >= len(items)
    served = online(platform, fresh)
    expected, predicted = tower.embed(items.head(3))
    np.testing.assert_allclose(np.stack(served["content_tower_vector"]), expected, rtol=1e-5)
    np.testing.assert_allclose(served["content_quality"], predicted, rtol=1e-5)
    assert (served["content_tower_version"] == trained["version"]).all()

    # Before anyone has seen them, the near-line tick orders new items' targets by the predicted quality it reads
    # from Feast: the content prior (without it, every unshown item gets the same target).
    ids = items["item_id"].to_numpy()
    published = pd.to_datetime(items["publish_time"], utc=True).astype("int64").to_numpy() / 1e9
    with NearlineState(SqliteBackend(tmp_path / "unshown.sqlite")) as state:
        state.publish(ids, items["author_id"].tolist(), published)
        state.tick(published.max() + 1, content_quality=feast_content_quality(store))
        targets = state.snapshot(ids)["target"]
    quality = online(platform, ids.tolist())["content_quality"].to_numpy(float)
    assert len(np.unique(targets)) > len(ids) // 2
    assert spearmanr(targets, quality).statistic > 0.99


def test_the_ranker_bento_packs_the_champion_tower_and_its_known_items_content(
    platform: Platform, trained: dict, tmp_path
) -> None:
    from pipelines.catalog import model as catalog_model
    from pipelines.serving.ranker_bento import packed_tower, side_data

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COLDSTART_HOME", str(platform.settings.home))
        side_data(platform.settings, catalog_model("esmm"), tmp_path)
    items = pd.read_parquet(tmp_path / "items.parquet")
    assert {"category", "keywords", "content_vector", "exposures_total"} <= set(items.columns)
    packed = packed_tower(tmp_path)
    assert packed.version == trained["version"]
    np.testing.assert_allclose(packed.embed(items.head(4))[0], load_tower(platform.settings).embed(items.head(4))[0])
