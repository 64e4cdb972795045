"""The held-out day's replay over the recall channels on a hand-built catalog whose answers are known: which clicks
each channel finds, per cold-start slice, which new items are returned within 1 h / 24 h, the 24 h censoring, the
request cap, and a day without clicks."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from pipelines.evaluation.retrieval import Requesters, RetrievalEvalConfig, replay_day, replay_window, report_html
from pipelines.retrieval.recall import Recall, RecallConfig
from pipelines.training.two_tower_data import WindowLog

DAY = dt.date(2026, 1, 10)
START = pd.Timestamp(DAY, tz="UTC")
E0, E1, E2 = np.eye(4, dtype=np.float32)[:3]


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def at(clock: str) -> pd.Timestamp:
    return START + pd.Timedelta(clock + ":00")


@pytest.fixture()
def catalog() -> tuple[pd.DataFrame, np.ndarray]:
    """Items 1-5 near e0 (category a), 6-8 near e1 (b), older is further (so the 30d ranking is known); new on the
    day: 100 at 10:20 (= e0, a), 101 at 03:30 (away from every user, category z), 102 at 05:10 (= e1, b)."""
    old = [(i, START - pd.Timedelta(hours=48 - i), "a" if i <= 5 else "b") for i in range(1, 9)]
    new = [(100, at("10:20"), "a"), (101, at("03:30"), "z"), (102, at("05:10"), "b")]
    items = pd.DataFrame(old + new, columns=["item_id", "publish_time", "category"])
    items["keywords"] = [[] for _ in range(len(items))]
    vectors = [_unit(E0 + 0.1 * i * E2) for i in range(1, 6)] + [_unit(E1 + 0.1 * i * E2) for i in range(1, 4)]
    vectors += [E0, _unit(-E0 - E1), E1]
    return items, np.stack(vectors)


def _recall(items: pd.DataFrame, vectors: np.ndarray) -> Recall:
    cfg = RecallConfig(quotas={"1h": 2, "category": 2, "30d": 3})
    old = (items["publish_time"] < START).to_numpy()
    return Recall.build(items[old], vectors[old], vectors[old], START, cfg)


NONE = np.zeros(0, np.int64)
# user 1 is warm (a click before the day), 2 and 3 are new
USERS = Requesters(
    np.array([1, 2, 3]), np.stack([E0, E1, E0]), [np.array([1]), NONE, NONE], [np.array([1]), NONE, NONE]
)
CLICKS = pd.DataFrame(
    [(1, 100, at("10:40")), (1, 100, at("10:50")), (1, 2, at("10:45")), (1, 1, at("10:30")),  # a repeat, a seen item
     (3, 100, at("12:30")), (3, 101, at("12:40")), (2, 6, at("15:10")), (2, 102, at("15:20")),
     (2, 7, START - pd.Timedelta(hours=2))],
    columns=["user_id", "item_id", "event_time"],
)  # fmt: skip


def test_the_replay_finds_what_each_channel_returns_per_slice(catalog) -> None:
    items, vectors = catalog
    out = replay_day(_recall(items, vectors), items, vectors, vectors, USERS, CLICKS, START, k=5, per_hour=10)
    assert out["requests"] == 3 and out["channels"] == ["any", "1h", "category", "30d"]  # at 11:00, 13:00, 16:00
    counts = {s: cell["clicks"] for s, cell in out["recall"]["any"].items()}
    # judged: (1,100) (1,2) (3,100) (3,101) (2,6) (2,102); not the repeat, the seen item, the day before's click
    assert counts == {"all": 6, "new_user": 4, "warm_user": 2, "new_item": 4, "warm_item": 2}
    assert out["recall"]["any"]["all"]["hits"] == 5 and out["recall"]["any"]["new_item"]["recall"] == 3 / 4
    assert out["recall"]["30d"]["all"]["hits"] == 5  # all but 101, far from everyone, are in the 30d pool's best 3
    assert out["recall"]["1h"]["all"]["hits"] == 1 and out["recall"]["1h"]["new_item"]["hits"] == 1  # (1,100) only
    assert out["recall"]["1h"]["warm_item"]["recall"] == 0.0
    for name in out["channels"]:
        for s in out["slices"]:
            assert out["recall"][name][s]["clicks"] == counts[s]
            assert out["recall"]["any"][s]["recall"] >= out["recall"][name][s]["recall"]


def test_new_item_coverage_within_1h_and_24h(catalog) -> None:
    items, vectors = catalog
    out = replay_day(_recall(items, vectors), items, vectors, vectors, USERS, CLICKS, START, k=5, per_hour=10)
    cover = {name: {w: (c["covered"], c["items"]) for w, c in windows.items()} for name, windows in
             out["coverage"].items()}  # fmt: skip
    # 100 (10:20) returned at 11:00, 40 min on; 102 (05:10) first at 16:00, 10 h 50 on; 101 never
    assert cover["any"] == {"1h": (1, 3), "24h": (2, 3)}
    assert cover["1h"] == {"1h": (1, 3), "24h": (1, 3)}  # the 1 h pool: only 100, its hour's single request
    assert cover["30d"] == {"1h": (1, 3), "24h": (2, 3)}
    assert all(c["24h"]["covered"] <= cover["any"]["24h"][0] for c in out["coverage"].values())
    # every new item's 24 h window runs past the day: the 24 h figure is censored, and says so
    assert out["new_items"]["published"] == 3 and out["new_items"]["censored_24h"] == 3
    observed = (13 + 40 / 60) + 20.5 + (18 + 50 / 60)  # from publishing to 24:00
    assert out["new_items"]["mean_observed_hours"] == pytest.approx(observed / 3)
    page = report_html({"model": "two_tower", "version": "1", "day": str(DAY), "catalog": 8} | out)
    assert "<table" in page and "30d" in page and "censored" in page


def test_a_longer_replay_observes_the_early_items_whole_24h(catalog) -> None:
    items, vectors = catalog
    out = replay_day(_recall(items, vectors), items, vectors, vectors, USERS, CLICKS, START, k=5, hours=28)
    assert out["new_items"]["censored_24h"] == 2  # 101 (03:30): its window ends 27:30, inside the 28 h replay


def test_the_request_cap_samples_the_hours_clickers_with_the_seed(catalog) -> None:
    items, vectors = catalog
    users = Requesters(np.array([1, 2, 3, 4]), np.stack([E0, E1, E0, E1]), [*USERS.histories, NONE],
                       [*USERS.seen, NONE])  # fmt: skip
    clicks = pd.concat([CLICKS, pd.DataFrame({"user_id": [4], "item_id": [7], "event_time": [at("15:30")]})])
    full = replay_day(_recall(items, vectors), items, vectors, vectors, users, clicks, START, k=5, per_hour=2)
    assert full["requests"] == 4 and full["recall"]["any"]["all"]["clicks"] == 7
    runs = [replay_day(_recall(items, vectors), items, vectors, vectors, users, clicks, START, k=5, per_hour=1,
                       seed=3) for _ in range(2)]  # fmt: skip
    assert runs[0]["requests"] == 3 and runs[0]["recall"]["any"]["all"]["clicks"] in (5, 6)  # 2 or 4 asks at 16:00
    assert runs[0] == runs[1]


def test_a_held_out_day_without_clicks_is_an_empty_evaluation_with_a_reason(catalog) -> None:
    items, vectors = catalog
    window = WindowLog(items.assign(content_vector=list(vectors)), pd.DataFrame({"user_id": [1, 2, 3]}),
                       CLICKS[CLICKS["event_time"] < START].assign(click=1))  # fmt: skip
    never = lambda users, histories: pytest.fail("no requester is embedded for a day without clicks")  # noqa: E731
    out = replay_window(window, DAY, vectors, vectors, never, 20, RetrievalEvalConfig())
    assert out["recall"] == {} and "no clicks" in out["skipped"]
