"""The recall channels for new items on tiny hand-built data: category/keyword index, spherical k-means clusters,
look-alike vectors, and the merge (quotas, de-duplication, seen filter, top-up)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.retrieval.clusters import ClusterIndex, ClusterIndexConfig, spherical_kmeans
from pipelines.retrieval.inverted import Interests, InvertedIndex, InvertedIndexConfig, largest_remainder
from pipelines.retrieval.lookalike import LookalikeConfig, LookalikeIndex
from pipelines.retrieval.merge import merge

T0 = pd.Timestamp("2026-01-01", tz="UTC")
HOUR = pd.Timedelta(hours=1)


def hours(*offsets: float) -> list[pd.Timestamp]:
    return [T0 + h * HOUR for h in offsets]


# ---------------------------------------------------------------- category / keyword index


@pytest.fixture
def inverted() -> InvertedIndex:
    index = InvertedIndex(InvertedIndexConfig(max_age=pd.Timedelta(hours=48), recency_half_life=pd.Timedelta(days=1)))
    # Published out of order on purpose: the lists must still come out newest first.
    index.publish(
        [3, 1, 2, 4, 5, 6],
        hours(3, 1, 2, 4, 5, 6),
        ["news", "news", "news", "sport", "sport", None],
        [["a", "b"], ["a"], ["b"], ["a"], [], ["c"]],
    )
    return index


def test_inverted_newest_first_and_late_insert(inverted):
    assert inverted.newest("category", "news", 10) == [3, 2, 1]
    assert inverted.newest("keyword", "a", 10) == [4, 3, 1]
    inverted.publish([7], hours(2.5), ["news"], [["a"]])  # a late arrival lands in time order
    assert inverted.newest("category", "news", 10) == [3, 7, 2, 1]
    inverted.publish([7], hours(10), ["sport"], [[]])  # re-publishing replaces the item
    assert inverted.newest("category", "news", 10) == [3, 2, 1]
    assert inverted.newest("category", "sport", 1) == [7]
    assert 7 not in inverted.newest("keyword", "a", 10)


def test_inverted_expiry(inverted):
    inverted.expire(T0 + 51.5 * HOUR)  # cutoff 3.5 h: items 1-3 leave the lists
    assert inverted.newest("category", "news", 10) == []
    assert inverted.newest("keyword", "a", 10) == [4]
    inverted.publish([8], hours(1), ["news"], [["a"]])  # published before the cutoff: never listed
    assert inverted.newest("category", "news", 10) == []
    # Content stays for reading interests, until content_max_age.
    assert inverted.user_interests([1, 2]).categories == {"news": 1.0}
    inverted.expire(T0 + pd.Timedelta(days=70))
    assert len(inverted) == 0


def test_user_interests_counts_and_recency(inverted):
    plain = inverted.user_interests([1, 2, 4], top_categories=2, top_keywords=1)
    assert plain.categories == pytest.approx({"news": 2 / 3, "sport": 1 / 3})
    assert list(plain.keywords) == ["a"] and plain.keywords["a"] == pytest.approx(2 / 3)
    # Two old news clicks (2 days before the newest, weight 1/4 each) against one fresh sport click.
    weighted = inverted.user_interests([1, 2, 4], times=hours(0, 0, 48))
    assert weighted.categories == pytest.approx({"sport": 1 / 1.5, "news": 0.5 / 1.5})
    assert list(weighted.categories) == ["sport", "news"]
    assert inverted.user_interests([999]).categories == {}  # unknown history items are left out


def test_inverted_recall_quotas_and_top_up(inverted):
    interests = Interests({"news": 0.75, "sport": 0.25}, {"a": 0.5, "c": 0.5})
    out = inverted.recall(interests, k=4)
    assert out["category"].ids.tolist() == [3, 5, 2, 1]  # quotas 3:1, one interest per round, newest first
    assert out["category"].scores.tolist() == [0.75, 0.25, 0.75, 0.75]
    assert out["keyword"].ids.tolist() == [4, 6, 3, 1]  # "c" has one item: "a" tops up
    assert inverted.recall(interests, k=3, exclude={3})["category"].ids.tolist() == [2, 5, 1]
    assert largest_remainder([0.5, 0.3, 0.2], 4) == [2, 1, 1]


# ---------------------------------------------------------------- spherical k-means clusters


def blobs(n: int = 20, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two well-separated blobs around e0 and e1 (scaled, so only directions matter)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(d, dtype=np.float32)[:2]
    labels = np.repeat([0, 1], n // 2)
    x = centres[labels] + 0.1 * rng.standard_normal((n, d)).astype(np.float32)
    return x * rng.uniform(0.5, 3.0, (n, 1)).astype(np.float32), labels


def test_spherical_kmeans_properties():
    x, truth = blobs()
    centroids, labels, _, converged = spherical_kmeans(x, 2, seed=1)
    assert converged
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-6)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_array_equal(labels, (unit @ centroids.T).argmax(axis=1))
    assert len(set(zip(truth.tolist(), labels.tolist(), strict=True))) == 2  # the blobs split exactly
    means = np.stack([unit[labels == c].mean(axis=0) for c in range(2)])
    np.testing.assert_allclose(centroids, means / np.linalg.norm(means, axis=1, keepdims=True), atol=1e-5)


def test_cluster_join_and_recall():
    x, truth = blobs()
    index = ClusterIndex(ClusterIndexConfig(items_per_cluster=10)).fit(np.arange(20), x, hours(*range(20)))
    assert index.fit_info["n_clusters"] == 2 and index.centroids.shape == (2, 8)
    blob0 = int(index.clusters_of([0])[0])
    assert index.newest(blob0, 3) == [9, 8, 7]  # blob 0 is items 0-9
    new = np.eye(8, dtype=np.float32)[[0]] + 0.05
    assert index.join([100], new, hours(30)).tolist() == [blob0]
    seeds = [0, 1, 15]  # two seeds in blob 0, one in blob 1: blob 0 first
    out = index.recall(seeds, newest_per_cluster=2, k=10)
    assert out.ids.tolist() == [100, 19, 9, 18]
    np.testing.assert_allclose(out.scores, [2 / 3, 1 / 3, 2 / 3, 1 / 3], rtol=1e-6)
    assert index.recall(seeds, newest_per_cluster=2, k=3, exclude={9}).ids.tolist() == [100, 19, 8]
    assert index.recall([12345], 2, 10).ids.tolist() == []
    index.expire(T0 + pd.Timedelta(days=30) + 15 * HOUR)  # cutoff 15 h
    assert index.newest(blob0, 10) == [100]


# ---------------------------------------------------------------- look-alike


def test_lookalike_running_mean_equals_batch_mean():
    rng = np.random.default_rng(0)
    users = rng.standard_normal((7, 4)).astype(np.float32)
    index = LookalikeIndex(4)
    index.publish([10, 11], hours(0, 0))
    index.engage([10, 10, 11], users[:3])  # a batch with a repeated item
    index.engage([10], users[3:4])
    index.engage([10, 10, 10], users[4:])
    vectors, counts = index.vectors([10, 11])
    np.testing.assert_allclose(vectors[0], users[[0, 1, 3, 4, 5, 6]].mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(vectors[1], users[2], atol=1e-6)
    assert counts.tolist() == [6, 1]


def test_lookalike_recall_ranks_similar_audience_first_and_expires():
    e = np.eye(4, dtype=np.float32)
    index = LookalikeIndex(4, LookalikeConfig(max_age=pd.Timedelta(hours=24), min_engagements=2))
    index.publish([1, 2, 3], hours(0, 1, 2))
    index.engage([1, 1, 2, 2, 3], np.stack([e[0], e[0] * 0.8 + e[1] * 0.6, e[1], e[2], e[0]]))
    out = index.recall(e[0], k=5)
    assert out.ids.tolist() == [1, 2]  # item 3 has one engagement, below min_engagements
    assert out.scores[0] == pytest.approx(0.9)
    assert index.recall(e[0], k=5, min_engagements=1).ids.tolist() == [3, 1, 2]
    assert index.recall(e[0], k=5, now=T0 + 24.5 * HOUR).ids.tolist() == [2]  # item 1 is past max_age
    index.expire(T0 + 25.5 * HOUR)
    assert len(index) == 1 and index.known([1, 2, 3]).tolist() == [False, False, True]
    with pytest.raises(ValueError, match="unknown items"):
        index.engage([1], e[:1])
    assert index.engage([1, 3], e[:2], on_unknown="skip") == 1


# ---------------------------------------------------------------- merge


def result(*ids: int) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(ids, np.int64), np.linspace(1, 0, len(ids)).astype(np.float32)


def test_merge_quotas_dedup_seen_top_up_and_k():
    results = {"category": result(1, 2, 3, 4, 5), "cluster": result(2, 6, 7), "lookalike": result(8)}
    out = merge(results, {"category": 2, "cluster": 2, "lookalike": 2}, seen={3}, k=10)
    # Interleaved: category 1, cluster 2, lookalike 8, category (2 taken) 4, cluster 6; then top-up 5, 7.
    assert out.ids.tolist() == [1, 2, 8, 4, 6, 5, 7]
    assert out.channels[1] == ("category", "cluster")  # found by both, listed once
    assert out.taken_by[:3] == ["category", "cluster", "lookalike"]
    assert 3 not in out.ids
    short = merge(results, {"category": 2, "cluster": 2, "lookalike": 2}, seen=np.array([3]), k=4)
    assert short.ids.tolist() == [1, 2, 8, 4]
    strict = merge(results, {"category": 1, "cluster": 1}, seen=set(), k=2)
    assert strict.ids.tolist() == [1, 2]
    assert merge(results, {"down": 5}, seen=[], k=3).ids.tolist() == [1, 2, 8]  # a missing channel is empty
    with pytest.raises(ValueError, match="quotas"):
        merge(results, {"category": -1}, seen=[], k=3)


# ---------------------------------------------------------------- save / load and bad inputs


def test_save_load_round_trips(tmp_path, inverted):
    inverted.expire(T0 + 50.5 * HOUR)
    interests = Interests({"news": 0.5, "sport": 0.5}, {"a": 1.0})
    inverted.save(tmp_path)
    loaded = InvertedIndex.load(tmp_path)
    assert loaded.config == inverted.config
    for field in ("category", "keyword"):
        a, b = inverted.recall(interests, 5)[field], loaded.recall(interests, 5)[field]
        assert a.ids.tolist() == b.ids.tolist()
    assert loaded.user_interests([1, 2, 4]) == inverted.user_interests([1, 2, 4])

    x, _ = blobs()
    clusters = ClusterIndex(ClusterIndexConfig(n_clusters=2)).fit(np.arange(20), x, hours(*range(20)))
    clusters.save(tmp_path)
    back = ClusterIndex.load(tmp_path)
    np.testing.assert_array_equal(back.centroids, clusters.centroids)
    assert back.fit_info == clusters.fit_info
    assert back.recall([0, 15], 3, 10).ids.tolist() == clusters.recall([0, 15], 3, 10).ids.tolist()

    look = LookalikeIndex(8)
    look.publish([1, 2], hours(0, 1))
    look.engage([1, 1, 2, 2], x[:4])
    look.save(tmp_path)
    again = LookalikeIndex.load(tmp_path)
    for a, b in zip(again.recall(x[0], 5), look.recall(x[0], 5), strict=True):
        np.testing.assert_array_equal(a, b)
    again.publish([3], hours(2))  # a loaded index keeps taking updates
    assert again.engage([3], x[:1]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cluster_index.npz", "inverted_index.npz", "lookalike_index.npz",
    ]  # fmt: skip


def test_bad_inputs_give_reasons():
    look = LookalikeIndex(4)
    look.publish([1], hours(0))
    with pytest.raises(ValueError, match="unknown items"):
        look.engage([2], np.ones((1, 4)))
    with pytest.raises(ValueError, match="dimension 4"):
        look.engage([1], np.ones((1, 3)))
    with pytest.raises(ValueError, match="NaN"):
        look.engage([1], np.full((1, 4), np.nan))
    with pytest.raises(ValueError, match="dimension 4"):
        look.recall(np.ones(5), 3)
    x, _ = blobs()
    clusters = ClusterIndex(ClusterIndexConfig(n_clusters=2)).fit(np.arange(20), x, hours(*range(20)))
    with pytest.raises(ValueError, match="dimension 8"):
        clusters.join([100], np.ones((1, 4)), hours(0))
    with pytest.raises(ValueError, match="NaN"):
        clusters.fit([1, 2], [[1.0, np.nan], [0.0, 1.0]], hours(0, 1))
    with pytest.raises(ValueError, match="zero rows"):
        clusters.join([100], np.zeros((1, 8)), hours(0))
    with pytest.raises(ValueError, match="times must be set"):
        InvertedIndex().publish([1], [pd.NaT], ["news"], [[]])
    inverted = InvertedIndex()
    with pytest.raises(ValueError, match="keywords must be a list"):
        inverted.publish([1, 2], hours(0, 1), ["news", "news"], [["a"], "oops"])
    assert len(inverted) == 0  # nothing from a bad batch
    frame = pd.DataFrame({"category": [np.nan, "news"], "keywords": [np.array(["a"]), None]}, index=[7, 8])
    inverted.publish([1, 2], hours(0, 1), frame["category"], frame["keywords"])
    assert inverted.newest("category", "news", 5) == [2] and inverted.newest("keyword", "a", 5) == [1]
    with pytest.raises(ValueError, match="extra"):
        InvertedIndexConfig(max_ages=1)
