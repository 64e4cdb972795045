"""``/recommend``'s serving path on a real platform: the champion two-tower and the recall indexes packed as a
bento's side data, recall -> rank with the served policies, and an item published after the build recommended
once the near-line refresh has seen it."""

from __future__ import annotations

import datetime as dt

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipelines.serving.nearline import NearlineState
from pipelines.serving.nearline_backends import SqliteBackend

from .conftest import Platform, apply_and_materialize, build_platform


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    """A platform of its own: the two-tower champion this module makes must not change other modules' bentos."""
    own = build_platform(tmp_path_factory.mktemp("recommend_platform"))
    apply_and_materialize(own)
    return own


@pytest.fixture(scope="module")
def packed(platform: Platform, tmp_path_factory: pytest.TempPathFactory):
    """A ranker and a champion two-tower trained on the first three days; the retrieval side data as of day 3."""
    from pipelines.catalog import model as catalog_model
    from pipelines.serving.recommend import pack_retrieval
    from pipelines.training.api import train_for_run
    from pipelines.training.config import TrainRequest

    settings, days = platform.settings, platform.days
    ranker = train_for_run("esmm", "sim", days[0], days[2], {}, {"epochs": 1}, settings=settings)
    entry = catalog_model("two_tower")
    request = TrainRequest(dataset="sim", start=days[0], end=days[2], train={"epochs": 2})
    two = entry.call("train", settings, entry, request)
    # Serving is under test here, not the gate: the version serves whatever its tiny window's recall was.
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    client.set_registered_model_alias(entry.registered_name, "champion", two["version"])
    folder = tmp_path_factory.mktemp("bento_model")
    assert pack_retrieval(settings, folder, tower=None, until=days[2])
    return ranker["version"], folder


def _recommender(platform: Platform, packed, tmp_path):
    from pipelines.catalog import model as catalog_model
    from pipelines.serving.features import FeastFeatures
    from pipelines.serving.policies import PolicyConfig
    from pipelines.serving.ranker import RankerCore
    from pipelines.serving.ranker_bento import known_items
    from pipelines.serving.recommend import Recommender

    version, folder = packed
    name = catalog_model("esmm").registered_name
    mlflow.set_tracking_uri(platform.settings.mlflow_tracking_uri)
    wrapper = mlflow.pyfunc.load_model(f"models:/{name}/{version}").unwrap_python_model()
    features = FeastFeatures(platform.settings)
    core = RankerCore(wrapper, features, known_items(platform.settings.home, "sim", platform.days[2]), PolicyConfig(),
                      version)  # fmt: skip
    nearline = NearlineState(SqliteBackend(tmp_path / "nearline.sqlite"))
    return Recommender.load(folder, core, features, nearline), nearline


def test_recall_then_rank_for_a_known_and_a_new_user(platform: Platform, packed, tmp_path) -> None:
    recommender, _ = _recommender(platform, packed, tmp_path)
    now = dt.datetime.combine(platform.days[2], dt.time(23, 0), dt.UTC)
    user = max(recommender.histories, key=lambda u: len(recommender.histories[u]))
    out = recommender.recommend(user, k=10, now=now)
    assert len(out["items"]) == 10 and not out["new_user"] and out["recalled"] >= 10
    assert all(item["channels"] and "policies" in item for item in out["items"])
    assert not {i["item_id"] for i in out["items"]} & set(recommender.histories[user])  # seen items are left out
    assert sum(out["recalled_by"].values()) == out["recalled"]
    scores = [i["score"] for i in out["items"]]
    assert scores == sorted(scores, reverse=True)  # the ranker's order, not recall's
    new = recommender.recommend(10**9, k=5, now=now)
    assert new["new_user"] and len(new["items"]) == 5


def test_an_item_published_after_the_build_is_recommended_after_the_refresh(platform: Platform, packed, tmp_path):
    recommender, nearline = _recommender(platform, packed, tmp_path)
    late = platform.data.read("items", platform.days[3], "clean").to_pandas()  # published after the packed catalog
    assert not set(late["item_id"].tolist()) & recommender.indexed
    published = pd.to_datetime(late["publish_time"], utc=True).astype("int64").to_numpy() / 1e9
    nearline.publish(late["item_id"].to_numpy(), late["author_id"].tolist(), published)  # the publish events
    now = dt.datetime.combine(platform.days[3], dt.time(23, 30), dt.UTC)
    assert recommender.refresh(now) == len(late)
    user = max(recommender.histories, key=lambda u: len(recommender.histories[u]))
    out = recommender.recommend(user, k=200, now=now)
    fresh = [i for i in out["items"] if i["item_id"] in set(late["item_id"].tolist())]
    assert fresh, "no item published after the build was recommended"
    assert all({"1h", "6h", "24h", "30d", "category", "keyword", "cluster", "lookalike"} >= set(i["channels"])
               for i in fresh)  # fmt: skip
    assert any({"6h", "24h"} & set(i["channels"]) for i in fresh)
    assert np.isfinite([i["score"] for i in fresh]).all()


def test_recommend_through_a_real_bentoml_serve(platform: Platform, packed) -> None:
    """The ranker bento imported, built and served as promotion does: its side data packs the champion two-tower
    and the recall indexes, and the golden requests promotion sends to ``/recommend`` pass."""
    import httpx

    from pipelines.catalog import model as catalog_model
    from pipelines.serving.bento import build, import_model, serve, stop
    from pipelines.serving.ranker_bento import smoke_requests

    settings = platform.settings
    bento = build(settings, "ranker", import_model(settings, "esmm", packed[0]))
    golden = [r for r in smoke_requests(settings, catalog_model("esmm")) if r["path"] == "/recommend"]
    assert len(golden) == 3
    process, url = serve(settings, bento)
    try:
        for request in golden:
            response = httpx.post(f"{url}{request['path']}", json=request["body"], timeout=60)
            assert response.status_code == request["status"], response.text
            if "check" in request:
                assert request["check"](response.json()), response.text
        now = dt.datetime.combine(platform.days[-1], dt.time(23, 0), dt.UTC).isoformat()
        out = httpx.post(f"{url}/recommend", json={"user_id": 10**9, "k": 3, "now": now}, timeout=60).json()
        assert out["retrieval_version"] and all(item["channels"] for item in out["items"])
    finally:
        stop(process)
