"""The recall composition: every channel over one small catalog, near-line publish and engage, merge, save/load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.retrieval.recall import Recall, RecallConfig

NOW = pd.Timestamp("2026-01-10 12:00", tz="UTC")
DIM, CONTENT = 8, 6


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture()
def catalog() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 300
    topic = rng.integers(0, 3, n)
    items = pd.DataFrame({
        "item_id": np.arange(n, dtype=np.int64),
        "publish_time": NOW - pd.to_timedelta(rng.uniform(2, 24 * 20, n), unit="h"),
        "category": [f"c{t}" for t in topic],
        "keywords": [[f"k{t}", f"w{i % 7}"] for i, t in enumerate(topic)],
    })  # fmt: skip
    centres, content_centres = rng.normal(size=(3, DIM)), rng.normal(size=(3, CONTENT))
    vectors = _unit(centres[topic] + 0.3 * rng.normal(size=(n, DIM)))
    content = _unit(content_centres[topic] + 0.3 * rng.normal(size=(n, CONTENT)))
    return items, vectors, content


def _config() -> RecallConfig:
    return RecallConfig(clusters={"items_per_cluster": 20}, quotas={"1h": 5, "6h": 5, "24h": 5, "lookalike": 5,
                        "category": 5, "keyword": 5, "cluster": 5, "30d": 20})  # fmt: skip


def test_every_channel_answers_and_a_new_item_is_recalled_within_the_hour(catalog, tmp_path) -> None:
    items, vectors, content = catalog
    recall = Recall.build(items, vectors, content, NOW, _config())
    user = vectors[items["category"].eq("c1").to_numpy()].mean(axis=0)
    history = items.loc[items["category"].eq("c1"), "item_id"].head(10).tolist()
    found = recall.channels(_unit(user), history, NOW, seen=set())
    assert set(found) == {"1h", "6h", "24h", "30d", "category", "keyword", "cluster", "lookalike"}
    assert len(found["1h"].ids) == 0 and len(found["30d"].ids) > 0  # nothing in the catalog is under 2 h old
    assert set(items.set_index("item_id").loc[found["category"].ids, "category"]) == {"c1"}

    # Published after the build, near the user: the 1 h pool recalls it, and it keeps every channel that found it.
    new = pd.DataFrame({"item_id": [1000], "publish_time": [NOW - pd.Timedelta(minutes=10)], "category": ["c1"],
                        "keywords": [["k1"]]})  # fmt: skip
    recall.publish(new, _unit(user)[None, :], content[history[:1]], NOW)
    merged = recall.recall(_unit(user), history, NOW, k=30, seen=history)
    assert 1000 in merged.ids.tolist()
    channels = dict(zip(merged.ids.tolist(), merged.channels, strict=True))[1000]
    assert {"1h", "6h", "24h", "30d", "category"} <= set(channels)
    assert not set(history) & set(merged.ids.tolist()) and len(merged.ids) == 30

    # Look-alike: once two similar users engaged with it, the new item is found by that channel too.
    assert recall.engage(np.array([1000, 1000, 5]), np.stack([_unit(user)] * 3)) == 2  # item 5 is not new
    assert 1000 in recall.channels(_unit(user), history, NOW, set())["lookalike"].ids.tolist()

    # The indexes travel (a bento's side data) and answer the same after loading.
    again = Recall.load(recall.save(tmp_path / "recall"))
    assert again.recall(_unit(user), history, NOW, k=30, seen=history).ids.tolist() == merged.ids.tolist()

    # Two hours on, the item has left the 1 h pool (the query filters by age even before expire runs).
    later = NOW + pd.Timedelta(hours=2)
    assert 1000 not in recall.channels(_unit(user), history, later, set())["1h"].ids.tolist()
    recall.expire(later)
    assert recall.pools.counts()["1h"] == 0


def test_a_channel_left_out_of_the_quotas_is_not_asked(catalog) -> None:
    items, vectors, content = catalog
    cfg = RecallConfig(clusters={"items_per_cluster": 20}, quotas={"30d": 10, "category": 5})
    recall = Recall.build(items, vectors, content, NOW, cfg)
    found = recall.channels(vectors[0], [0, 1, 2], NOW, set())
    assert set(found) == {"30d", "category"}
    merged = recall.recall(vectors[0], [0, 1, 2], NOW, k=12)
    assert len(merged.ids) == 12 and set(merged.taken_by) <= {"30d", "category"}
