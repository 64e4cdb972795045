"""``/recommend``'s serving path on a real platform: the champion two-tower and the recall indexes built after
training (a versioned folder) or at packing, packed as a bento's side data; recall (every channel or the named ones)
-> rank with the served policies; an item published after the build recommended once the near-line refresh has
seen it; and promotion's smoke test of ``/recommend`` through a real ``bentoml serve``."""

from __future__ import annotations

import datetime as dt
import json

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


@pytest.fixture(scope="module")
def built(platform: Platform, packed) -> dict:
    """The champion's indexes built as ``train_models`` builds them: as of the training window's end (day 3)."""
    from pipelines.retrieval.build import build_indexes

    return build_indexes(platform.settings, "sim", until=platform.days[2])


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
    published = (pd.to_datetime(late["publish_time"], utc=True) - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    published = published.to_numpy()  # POSIX seconds, whatever the column's unit
    nearline.publish(late["item_id"].to_numpy(), late["author_id"].tolist(), published)  # the publish events
    # The near-line writer logs two users' clicks on the newest late item: the refresh folds them into its
    # look-alike vector (the engaging users' two-tower vectors), which the look-alike channel then serves.
    before = pd.Timestamp(dt.datetime.combine(platform.days[3], dt.time(23, 0), dt.UTC))
    newest = late[pd.to_datetime(late["publish_time"], utc=True) < before].sort_values("publish_time").iloc[-1]
    engaged = sorted(recommender.histories)[:2]
    clicked_at = np.full(2, pd.Timestamp(newest["publish_time"]).timestamp() + 60.0)
    nearline.record_impressions([int(newest["item_id"])] * 2, clicked_at, np.ones(2), user_ids=engaged)
    now = dt.datetime.combine(platform.days[3], dt.time(23, 30), dt.UTC)
    assert recommender.refresh(now) == len(late)
    _, engagements = recommender.recall.lookalike.vectors([int(newest["item_id"])])
    assert engagements.tolist() == [2]
    assert recommender.engage() == 0  # this worker's cursor has read them: nothing is folded twice
    user = max(recommender.histories, key=lambda u: len(recommender.histories[u]))
    out = recommender.recommend(user, k=200, now=now)
    fresh = [i for i in out["items"] if i["item_id"] in set(late["item_id"].tolist())]
    assert fresh, "no item published after the build was recommended"
    assert all({"1h", "6h", "24h", "30d", "category", "keyword", "cluster", "lookalike"} >= set(i["channels"])
               for i in fresh)  # fmt: skip
    assert any({"6h", "24h"} & set(i["channels"]) for i in fresh)
    assert np.isfinite([i["score"] for i in fresh]).all()


def test_build_indexes_writes_a_versioned_folder_with_its_manifest(platform: Platform, packed, built) -> None:
    from pipelines.retrieval.build import index_root
    from pipelines.retrieval.recall import Recall
    from pipelines.serving.recommend import catalog_items

    version = mlflow.MlflowClient(platform.settings.mlflow_tracking_uri).get_model_version_by_alias(
        "coldstart_two_tower", "champion").version  # fmt: skip
    folder = index_root(platform.settings, "sim") / f"v{version}"
    items = catalog_items(platform.settings.home, "sim", platform.days[2])
    assert built["two_tower_version"] == str(version) and built["content_tower_version"] is None
    assert built["items"] == len(items) and built["until"] == platform.days[2].isoformat()
    assert pd.Timestamp(built["as_of"]) == items["publish_time"].max()
    assert json.loads((folder / "manifest.json").read_text()) == built
    assert 0 < Recall.load(folder / "recall").pools.counts()["30d"] <= len(items)  # the month's items
    assert set(np.load(folder / "indexed_items.npy").tolist()) == set(items["item_id"].tolist())
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # the temporary build was renamed or removed


def test_pack_retrieval_copies_the_prebuilt_indexes_of_the_champions(platform: Platform, packed, built, tmp_path):
    from pipelines.retrieval.build import index_root
    from pipelines.retrieval.recall import Recall
    from pipelines.serving.recommend import RETRIEVAL_DIR, catalog_items, pack_retrieval, recent_histories

    settings = platform.settings
    source = index_root(settings, "sim") / f"v{built['two_tower_version']}"
    assert pack_retrieval(settings, tmp_path / "copied", tower=None)
    folder = tmp_path / "copied" / RETRIEVAL_DIR
    assert json.loads((folder / "manifest.json").read_text()) == built  # the same build, built_at included
    histories = pd.read_parquet(folder / "histories.parquet")  # users' clicks as of the packing, not the build
    assert len(histories) == len(recent_histories(settings, "sim")) > 0
    # The near-line state follows the day-4 items (its window is a day): they are left to the near-line refresh.
    assert set(np.load(folder / "indexed_items.npy").tolist()) == set(np.load(source / "indexed_items.npy").tolist())
    # A service without near-line state would never see them: packing publishes them into the copy.
    alone = settings.model_copy(update={"ranker_nearline": False})
    assert pack_retrieval(alone, tmp_path / "alone", tower=None)
    late = platform.data.read("items", platform.days[3], "clean").to_pandas()["item_id"].tolist()
    indexed = set(np.load(tmp_path / "alone" / RETRIEVAL_DIR / "indexed_items.npy").tolist())
    assert set(late) <= indexed and len(indexed) == len(catalog_items(settings.home, "sim"))
    assert Recall.load(tmp_path / "alone" / RETRIEVAL_DIR / "recall").pools.counts()["1h"] > 0
    # Asked as of another day, the prebuilt folder is not that day's: built at packing instead.
    assert pack_retrieval(settings, tmp_path / "other", tower=None, until=platform.days[1])
    other = json.loads((tmp_path / "other" / RETRIEVAL_DIR / "manifest.json").read_text())
    assert other["until"] == platform.days[1].isoformat()
    assert pd.Timestamp(other["as_of"]) < pd.Timestamp(built["as_of"])


def test_recommend_recalls_only_from_the_named_channels(platform: Platform, packed, tmp_path) -> None:
    from pipelines.serving.recommend import ChannelError, catalog_items

    recommender, _ = _recommender(platform, packed, tmp_path)
    now = catalog_items(platform.settings.home, "sim", platform.days[2])["publish_time"].max().to_pydatetime()
    user = max(recommender.histories, key=lambda u: len(recommender.histories[u]))
    everything = recommender.recommend(user, k=100, now=now)
    assert len(set(everything["recalled_by"])) > 2
    fresh = recommender.recommend(10**9, k=500, now=now, candidates=500, channels=["1h"])
    assert fresh["items"] and all(i["channels"] == ["1h"] for i in fresh["items"])
    assert set(fresh["recalled_by"]) == {"1h"} and fresh["recalled"] == len(fresh["items"])
    content = recommender.recommend(user, k=100, now=now, channels=["keyword", "category"])
    assert content["items"] and set(content["recalled_by"]) <= {"category", "keyword"}
    assert all(set(i["channels"]) <= {"category", "keyword"} for i in content["items"])
    for bad in (["1h", "2h"], []):
        with pytest.raises(ChannelError, match="30d"):  # the reason lists the valid channels
            recommender.recommend(user, now=now, channels=bad)


@pytest.mark.slow
def test_airflow_dags_test_promote_bento_smoke_tests_recommend(platform: Platform, packed, built) -> None:
    """`promote_bento` through `airflow dags test`: the ranker bento packs the prebuilt indexes (as of day 3), the
    near-line state catches up on the newest days, and the smoke test's golden ``/recommend`` requests pass
    against the real ``bentoml serve``, including a new user asked for an item published on day 4, after the
    index build, which only the near-line refresh can have put in the 1 h pool."""
    from pipelines.catalog import model as catalog_model
    from pipelines.data.contract import day_bounds
    from pipelines.serving.nearline import NearlineState
    from pipelines.serving.promote import staging_record
    from pipelines.serving.ranker_bento import packed_retrieval, smoke_requests
    from pipelines.serving.smoke import UNKNOWN_ID

    from ..dags.test_dags import dags_test

    settings, version = platform.settings, packed[0]
    name = catalog_model("esmm").registered_name
    mlflow.MlflowClient(settings.mlflow_tracking_uri).set_model_version_tag(name, version, "gate", "passed")
    conf = {"models": ["esmm"], "version": str(version)}
    out, states = dags_test(settings.home, "promote_bento", platform.days[3].isoformat(), "--conf", json.dumps(conf))
    assert out.returncode == 0 and states == {"chosen": "success", "promote": "success"}, (
        (out.stdout + out.stderr)[-4000:])  # fmt: skip
    assert staging_record(settings, "esmm")["version"] == str(version)
    with NearlineState.open(settings, "sim") as state:  # caught up on the newest clean day before serving
        assert state.watermark() == day_bounds(platform.days[-1])[1].timestamp()
    # The golden requests the promotion's smoke test sent (the same list, made again from the promoted bento).
    folder, manifest = packed_retrieval(settings, catalog_model("esmm"))
    assert manifest == built and (folder / "recall" / "pools.npz").is_file()  # the prebuilt indexes, packed
    recommend = [r for r in smoke_requests(settings, catalog_model("esmm")) if r["path"] == "/recommend"]
    assert [r["status"] for r in recommend] == [200, 200, 200, 400, 400]
    late = recommend[0]  # the service's first /recommend: its near-line refresh runs as of this request's time
    asked = pd.Timestamp(late["body"]["now"]) - pd.Timedelta(minutes=30)  # the item's publish time
    assert late["body"]["user_id"] == UNKNOWN_ID and asked > pd.Timestamp(built["as_of"])
    assert asked.date() == platform.days[3] and late["body"]["channels"] == ["1h"]
    day4 = platform.data.read("items", platform.days[3], "clean").to_pandas()
    item = day4.loc[pd.to_datetime(day4["publish_time"], utc=True) == asked, "item_id"]
    assert len(item) and not set(item.tolist()) & set(np.load(folder / "indexed_items.npy").tolist())  # near-line only
