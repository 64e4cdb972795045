"""The closed loop's platform retrieval: publish events enter the channels when their time has come, logged
impressions become histories, the seen filter and look-alike updates, and each candidate logs its channel."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipelines.data.contract import RECALL_CHANNELS
from pipelines.data.sim_feed import Requests
from pipelines.experiments.platform_recall import PlatformRecall
from pipelines.retrieval.recall import Recall, RecallConfig

NOW = pd.Timestamp("2026-01-10 12:00", tz="UTC")
DIM = 8


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class _Towers:
    """A stand-in two-tower: an item's vector is its category's direction; a user's is the mean of their history's
    items (category c of item i is i % 3), or the first direction for a new user."""

    version = "1"
    centres = _unit(np.random.default_rng(0).normal(size=(3, DIM)))

    def embed_items(self, items: pd.DataFrame) -> np.ndarray:
        return self.centres[items["category"].str[1:].astype(int).to_numpy()]

    def embed_users(self, users: pd.DataFrame, histories) -> np.ndarray:
        return np.stack([_unit(self.centres[np.asarray(h, int) % 3].mean(axis=0)) if len(h) else self.centres[0]
                         for h in histories])  # fmt: skip


def _items(ids, times) -> pd.DataFrame:
    ids = np.asarray(ids, np.int64)
    return pd.DataFrame({"item_id": ids, "publish_time": pd.to_datetime(times, utc=True),
                         "category": [f"c{i % 3}" for i in ids], "keywords": [[f"k{i % 3}"] for i in ids],
                         "content_vector": [np.eye(4, dtype=np.float32)[i % 3].tolist() for i in ids]})  # fmt: skip


@pytest.fixture()
def platform() -> PlatformRecall:
    catalog = _items(np.arange(60), [NOW - pd.Timedelta(hours=5 + i) for i in range(60)])
    towers = _Towers()
    quotas = {"1h": 3, "24h": 5, "category": 5, "lookalike": 3, "30d": 10}
    cfg = RecallConfig(clusters={"items_per_cluster": 10}, quotas=quotas)
    content = np.stack(catalog["content_vector"].map(np.asarray).to_list()).astype(np.float32)
    recall = Recall.build(catalog, towers.embed_items(catalog), content, NOW, cfg)
    return PlatformRecall(recall, towers, {7: [3, 6, 9]}, k=12)


def _profiles(ids: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"user_id": ids})


def _requests(users, at: pd.Timestamp) -> Requests:
    users = np.asarray(users, np.int64)
    return Requests(user=users, time_us=np.full(len(users), at.value // 1000, np.int64),
                    is_new_user=np.zeros(len(users), bool))  # fmt: skip


def test_candidates_come_from_the_channels_and_log_the_channel_that_took_them(platform) -> None:
    slates, valid = platform.candidates(_requests([7, 8], NOW + pd.Timedelta(minutes=5)), _profiles)
    assert slates.items.shape == (2, 12) and valid.all()
    names = {RECALL_CHANNELS[c] for c in slates.channel.ravel()}
    assert names <= set(platform.recall.cfg.quotas) and "30d" in names
    assert not {3, 6, 9} & set(slates.items[0].tolist())  # the user's clicks are seen
    assert len(set(slates.items[0].tolist())) == 12  # de-duplicated


def test_a_published_item_enters_at_the_first_hour_after_its_publish_time(platform) -> None:
    publish = NOW + pd.Timedelta(minutes=30)
    platform.published(pa.Table.from_pandas(_items([100], [publish]), preserve_index=False))
    hour = NOW.floor("h") + pd.Timedelta(hours=1)
    early, _ = platform.candidates(_requests([8], NOW + pd.Timedelta(minutes=40)), _profiles)
    assert 100 not in early.items.ravel().tolist()  # published, but its hour has not ended: not yet eligible
    slates, _ = platform.candidates(_requests([8], hour + pd.Timedelta(minutes=1)), _profiles)
    row = slates.items[0].tolist()
    assert 100 in row and RECALL_CHANNELS[slates.channel[0][row.index(100)]] == "1h"
    assert platform.counts["published"] == 1


def test_logged_impressions_make_histories_seen_items_and_move_look_alike_vectors(platform) -> None:
    publish = NOW - pd.Timedelta(minutes=50)
    platform.published(pa.Table.from_pandas(_items([101], [publish]), preserve_index=False))
    at = NOW + pd.Timedelta(minutes=10)
    slates, _ = platform.candidates(_requests([8], at), _profiles)  # user 8 is new: its vector is remembered
    shown = slates.items[0][:4]
    assert shown[0] == 101  # the 1 h pool's only item, and the 1 h channel merges first
    impressions = pa.table({"user_id": np.full(4, 8, np.int64), "item_id": shown,
                            "event_time": pa.array([at.to_pydatetime()] * 4, pa.timestamp("us", tz="UTC")),
                            "click": (shown == 101).astype(np.int8)})  # fmt: skip
    platform.logged(impressions)
    assert platform.histories[8] == [101]
    assert set(shown.tolist()) <= set(platform.seen[8])
    assert platform.counts["engaged"] == 1  # a click on a new item moved its look-alike vector
    again, _ = platform.candidates(_requests([8], at + pd.Timedelta(minutes=5)), _profiles)
    assert not set(shown.tolist()) & set(again.items[0].tolist())  # seen items are not recalled again


def test_a_channel_outside_the_log_contract_is_refused() -> None:
    catalog = _items(np.arange(10), [NOW - pd.Timedelta(hours=3)] * 10)
    towers = _Towers()
    cfg = RecallConfig(pools={"windows_hours": {"2h": 2}}, clusters={"items_per_cluster": 5}, quotas={"2h": 5})
    content = np.stack(catalog["content_vector"].map(np.asarray).to_list()).astype(np.float32)
    recall = Recall.build(catalog, towers.embed_items(catalog), content, NOW, cfg)
    with pytest.raises(ValueError, match="not in the log contract"):
        PlatformRecall(recall, towers, {}, k=5)
