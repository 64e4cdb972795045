"""The ANN index (usearch HNSW) against exact search, and the age pools' windows, expiry, padding and errors."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from pydantic import ValidationError

from pipelines.retrieval.ann import AnnConfig, AnnIndex
from pipelines.retrieval.pools import AgePools, PoolsConfig

DIM = 32
T0 = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def clustered(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    """Unit vectors from a mixture of Gaussians (what the benchmark uses, smaller)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dim))
    out = centres[rng.integers(0, 50, n)] + 0.75 * rng.standard_normal((n, dim))
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def exact(items: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ items.T), axis=1)[:, :k]


@pytest.fixture(scope="module")
def filled() -> tuple[AnnIndex, np.ndarray]:
    items = clustered(3000, seed=11)
    index = AnnIndex(DIM)
    index.add(np.arange(len(items)), items)
    return index, items


def test_recall_against_exact_search(filled):
    index, items = filled
    queries = clustered(100, seed=12)
    ids, scores = index.search(queries, 100)
    truth = exact(items, queries, 100)
    recall = np.mean([len(np.intersect1d(found, true)) / 100 for found, true in zip(ids, truth, strict=True)])
    assert recall >= 0.95
    # Scores are cosines, best first.
    np.testing.assert_allclose(scores[:, 0], np.max(queries @ items.T, axis=1), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_add_then_remove_one_item(filled):
    index, _ = filled
    vector = clustered(1, seed=13)
    index.add([10_000], vector * 3.0)  # normalised on the way in
    ids, scores = index.search(vector, 5)
    assert ids[0, 0] == 10_000 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    index.remove([10_000])
    ids, _ = index.search(vector, 100)
    assert 10_000 not in ids and len(index) == 3000 and not index.contains([10_000])[0]


def test_recall_holds_after_churn():
    """A pool's life: half the items removed (expired) and as many new ones added into the freed slots."""
    items = clustered(4000, seed=15)
    index = AnnIndex(DIM)
    index.add(np.arange(2000), items[:2000])
    index.remove(np.arange(1000))
    index.add(np.arange(2000, 3000), items[2000:3000])
    live = np.arange(1000, 3000)
    queries = clustered(50, seed=16)
    ids, _ = index.search(queries, 50)
    truth = live[exact(items[live], queries, 50)]
    recall = np.mean([len(np.intersect1d(found, true)) / 50 for found, true in zip(ids, truth, strict=True)])
    assert recall >= 0.95 and len(index) == 2000 and not np.isin(ids, np.arange(1000)).any()


def test_save_load_round_trip(tmp_path, filled):
    index, _ = filled
    queries = clustered(20, seed=14)
    path = index.save(tmp_path / "ann")
    assert path.exists() and [p.name for p in path.parent.iterdir()] == ["ann.npz"]  # no temporary file left
    loaded = AnnIndex.load(tmp_path / "ann")
    assert loaded.config == index.config and len(loaded) == len(index)
    for got, want in zip(loaded.search(queries, 50), index.search(queries, 50), strict=True):
        np.testing.assert_array_equal(got, want)


def test_padding_when_fewer_than_k():
    index = AnnIndex(4)
    ids, scores = index.search(np.ones(4), 3)
    assert (ids == -1).all() and np.isnan(scores).all()
    index.add([7, 8], np.eye(4)[:2])
    ids, scores = index.search(np.eye(4)[:1], 3)
    assert ids.tolist() == [[7, 8, -1]]
    assert scores[0, 0] == pytest.approx(1.0) and np.isnan(scores[0, 2])


@pytest.mark.parametrize(
    ("ids", "vectors", "reason"),
    [
        ([1, 2], np.ones((2, 5)), "shape"),
        ([1, 2], [[1, np.nan, 0, 0], [1, 0, 0, 0]], "NaN"),
        ([1, 1], np.eye(4)[:2], "duplicate"),
        ([1], np.zeros((1, 4)), "all-zero"),
        ([-3], np.eye(4)[:1], "non-negative"),
        ([1, 2, 3], np.eye(4)[:2], "3 ids for 2 vectors"),
    ],
)
def test_bad_inputs_say_why(ids, vectors, reason):
    with pytest.raises(ValueError, match=reason):
        AnnIndex(4).add(ids, vectors)


def test_adding_an_id_twice_or_removing_an_unknown_one_fails():
    index = AnnIndex(4)
    index.add([1], np.eye(4)[:1])
    with pytest.raises(ValueError, match="already in the index"):
        index.add([1], np.eye(4)[1:2])
    with pytest.raises(ValueError, match="not in the index"):
        index.remove([1, 2])
    assert len(index) == 1  # a failed remove removes nothing
    with pytest.raises(ValueError, match=r"shape \[n, 4\]"):
        index.search(np.ones((1, 3)), 1)


def pools_with_one_item(vector: np.ndarray) -> AgePools:
    pools = AgePools(DIM)
    pools.publish([42], vector, [T0])
    return pools


def test_pools_hide_items_past_their_window_before_expire():
    vector = clustered(1, seed=21)
    pools = pools_with_one_item(vector)
    assert pools.counts() == {"1h": 1, "6h": 1, "24h": 1, "30d": 1}
    found = pools.search(vector, 3, now=T0 + dt.timedelta(minutes=30))
    assert all(ids[0, 0] == 42 for ids, _ in found.values())
    found = pools.search(vector, 3, now=T0 + dt.timedelta(hours=2))  # no expire yet
    assert found["1h"][0].tolist() == [[-1, -1, -1]] and np.isnan(found["1h"][1]).all()
    assert found["6h"][0][0, 0] == 42 and found["30d"][0][0, 0] == 42
    assert pools.search(vector, 1, now=T0 - dt.timedelta(minutes=1))["30d"][0][0, 0] == -1  # not published yet


def test_expire_shrinks_counts_and_the_month_pool_keeps_the_item():
    vector = clustered(1, seed=22)
    pools = pools_with_one_item(vector)
    assert pools.expire(T0 + dt.timedelta(hours=2)) == {"1h": 1, "6h": 0, "24h": 0, "30d": 0}
    assert pools.expire(T0 + dt.timedelta(days=2)) == {"1h": 0, "6h": 1, "24h": 1, "30d": 0}
    assert pools.counts() == {"1h": 0, "6h": 0, "24h": 0, "30d": 1}
    assert pools.search(vector, 1, now=T0 + dt.timedelta(days=2))["30d"][0][0, 0] == 42
    pools.expire(T0 + dt.timedelta(days=31))
    assert pools.counts()["30d"] == 0


def test_publish_puts_an_old_item_only_in_the_pools_that_cover_its_age():
    pools = AgePools(DIM)
    vectors = clustered(2, seed=23)
    added = pools.publish([1, 2], vectors, [T0 - dt.timedelta(hours=3), T0], now=T0)
    assert added == {"1h": 1, "6h": 2, "24h": 2, "30d": 2}
    assert pools.search(vectors[:1], 2, now=T0)["1h"][0].tolist() == [[2, -1]]


def test_stale_neighbours_do_not_crowd_out_fresh_items():
    """A pool full of expired-but-not-removed near neighbours still returns its fresh items (refetch)."""
    pools = AgePools(DIM, PoolsConfig(windows_hours={"1h": 1}))
    query = clustered(1, seed=24)
    near = query + 0.01 * np.random.default_rng(0).standard_normal((30, DIM)).astype(np.float32)
    pools.publish(np.arange(30), near, [T0] * 30)
    pools.publish([100, 101], clustered(2, seed=25), [T0 + dt.timedelta(minutes=50)] * 2)
    ids, _ = pools.search(query, 5, now=T0 + dt.timedelta(minutes=70))["1h"]
    assert sorted(ids[0, :2].tolist()) == [100, 101] and (ids[0, 2:] == -1).all()


def test_pools_save_load_round_trip(tmp_path):
    pools = AgePools(DIM)
    vectors = clustered(200, seed=26)
    times = [T0 - dt.timedelta(minutes=int(m)) for m in np.linspace(0, 3000, 200)]
    pools.publish(np.arange(200), vectors, times, now=T0)
    pools.save(tmp_path)
    loaded = AgePools.load(tmp_path)
    assert loaded.counts() == pools.counts() and loaded.config == pools.config
    now = T0 + dt.timedelta(minutes=20)
    want, got = pools.search(vectors[:5], 10, now), loaded.search(vectors[:5], 10, now)
    for name in pools.pools:
        np.testing.assert_array_equal(got[name][0], want[name][0])
        np.testing.assert_array_equal(got[name][1], want[name][1])
    assert loaded.expire(T0 + dt.timedelta(days=1)) == pools.expire(T0 + dt.timedelta(days=1))


def test_pool_inputs_are_checked():
    pools = pools_with_one_item(clustered(1, seed=27))
    with pytest.raises(ValueError, match="already in a pool"):
        pools.publish([42], clustered(1, seed=28), [T0])
    with pytest.raises(ValueError, match="after now"):
        pools.publish([43], clustered(1, seed=28), [T0], now=T0 - dt.timedelta(hours=1))
    with pytest.raises(ValueError, match="NaN"):
        pools.publish([43], np.full((1, DIM), np.nan), [T0])
    with pytest.raises(ValueError, match="duplicate item_ids"):
        pools.publish([43, 43], clustered(2, seed=28), [T0, T0])
    with pytest.raises(ValueError, match="1 item_ids, 1 vectors and 2 publish_times"):
        pools.publish([43], clustered(1, seed=28), [T0, T0])
    with pytest.raises(ValueError, match="shape"):
        pools.search(np.ones((1, DIM + 1)), 3, now=T0)
    assert pools.counts()["1h"] == 1  # failed publishes added nothing
    with pytest.raises(ValidationError, match="positive"):
        PoolsConfig(windows_hours={"1h": 0})
    with pytest.raises(ValidationError, match="extra"):
        PoolsConfig(windows={"1h": 1})
    with pytest.raises(ValidationError):
        AnnConfig(connectivity=1)
