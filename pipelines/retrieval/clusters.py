"""Cluster recall: spherical k-means over content-tower vectors (MODELS.md §7), cluster -> items newest first.

Spherical k-means: rows are L2-normalised, each is assigned to the centroid of largest cosine, and a centroid is
the *normalised* mean of its rows. scikit-learn's ``KMeans`` on normalised rows is not this: its centroids are
plain means (norm < 1), and nearest-by-Euclidean to an unnormalised centroid is not largest cosine, so a small
numpy loop does it (k-means++ seeding on cosine distance 1 - cos; a centroid left empty or cancelled out takes the
row worst served by its own centroid). Similarities are computed in row blocks, so 100k items x 2,000 centroids
needs ~64 MB, not 800.

k is chosen so clusters hold tens of items ([vague] in MODELS.md; industrial k is 1000-2048): ``n_items /
items_per_cluster``, capped at ``max_clusters``; the choice is kept in :attr:`ClusterIndex.fit_info`.

Recall: a user's last engaged items (seeds, most recent first) -> their clusters, the clusters most seeds fall in
first -> each cluster's newest ``m`` items, one cluster per round. A new item joins its nearest centroid at publish
(centroids are not refit; a periodic :meth:`ClusterIndex.fit` does that), so it is its cluster's newest item and is
recalled first among them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipelines.retrieval.inverted import Postings, duration_ns, load_npz, save_npz_atomic, utc_ns, utc_ns1
from pipelines.retrieval.merge import Candidates

log = logging.getLogger(__name__)
_FILE = "cluster_index.npz"


def check_vectors(vectors: Any, dim: int | None = None, what: str = "vectors", unit: bool = False) -> np.ndarray:
    """``vectors`` as a [n, d] float32 array; a ValueError says what is wrong (shape, dimension, NaN, zero rows).

    With ``unit`` the rows are L2-normalised (a zero row cannot be)."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{what} must be 2-D [n, d], got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{what} must have dimension {dim}, got {x.shape[1]}")
    if not np.isfinite(x).all():
        rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
        raise ValueError(f"{what} contain NaN or inf in {len(rows)} rows (first {rows[:5].tolist()})")
    if unit:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        if (norms <= 1e-12).any():
            raise ValueError(f"{what} contain {int((norms <= 1e-12).sum())} zero rows, which have no direction")
        x = x / norms
    return x


def _assign(x: np.ndarray, centroids: np.ndarray, block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """[n] index of each row's max-cosine centroid and [n] that cosine (rows and centroids unit)."""
    labels = np.empty(len(x), np.int64)
    best = np.empty(len(x), np.float32)
    for start in range(0, len(x), block):
        sims = x[start : start + block] @ centroids.T  # [block, k]
        labels[start : start + block] = sims.argmax(axis=1)
        best[start : start + block] = sims[np.arange(len(sims)), labels[start : start + block]]
    return labels, best


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on cosine distance: each next centroid is a row drawn with probability ∝ (1 - max cos)²."""
    chosen = [int(rng.integers(len(x)))]
    best = x @ x[chosen[0]]  # [n] max cosine to a chosen centroid
    for _ in range(1, k):
        weight = np.square(np.clip(1.0 - best, 0.0, None)).astype(np.float64)
        total = weight.sum()
        nxt = int(np.searchsorted(np.cumsum(weight), rng.random() * total)) if total > 0 else int(rng.integers(len(x)))
        nxt = min(nxt, len(x) - 1)
        chosen.append(nxt)
        np.maximum(best, x @ x[nxt], out=best)
    return x[chosen].copy()


def _centroids(x: np.ndarray, labels: np.ndarray, k: int, best: np.ndarray) -> np.ndarray:
    """Normalised mean per cluster; an empty or cancelled cluster is reseeded with the worst-served row."""
    sums = np.stack([np.bincount(labels, weights=x[:, j], minlength=k) for j in range(x.shape[1])], axis=1)
    norms = np.linalg.norm(sums, axis=1)
    dead = np.flatnonzero(norms <= 1e-9)
    if len(dead):
        worst = np.argsort(best, kind="stable")[: len(dead)]
        sums[dead], norms[dead] = x[worst], 1.0
    return (sums / norms[:, None]).astype(np.float32)


def spherical_kmeans(
    vectors: Any, n_clusters: int, max_iter: int = 30, seed: int = 0, init: str = "kmeans++", tol: float = 0.0
) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """Spherical k-means: [k, d] unit centroids, [n] labels (each row's max-cosine centroid), iterations run and
    whether the assignments settled.

    Stops when at most ``tol`` of the rows change cluster in an iteration, or after ``max_iter`` iterations."""
    x = check_vectors(vectors, unit=True)
    if not 1 <= n_clusters <= len(x):
        raise ValueError(f"n_clusters must be in [1, {len(x)}] (the number of rows), got {n_clusters}")
    rng = np.random.default_rng(seed)
    if init == "kmeans++":
        centroids = _kmeans_pp(x, n_clusters, rng)
    else:
        centroids = x[rng.choice(len(x), n_clusters, replace=False)].copy()
    labels, best = _assign(x, centroids)
    n_iter, converged = 0, False
    while n_iter < max_iter and not converged:
        n_iter += 1
        centroids = _centroids(x, labels, n_clusters, best)
        new, best = _assign(x, centroids)
        converged = bool(np.count_nonzero(new != labels) <= tol * len(x))
        labels = new
    return centroids, labels, n_iter, converged


class ClusterIndexConfig(BaseModel):
    """Size and ages of the cluster index. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    items_per_cluster: int = Field(
        50, ge=2, description="Target items per cluster: k = n_items / this. Tens of items, so a cluster's newest "
        "few are a real choice and a seed's cluster is still about the seed (MODELS.md §7).",
    )  # fmt: skip
    n_clusters: int | None = Field(None, ge=1, description="Fixed k, overriding items_per_cluster.")
    max_clusters: int = Field(2048, ge=1, description="Cap on k (industrial k is 1000-2048).")
    max_iter: int = Field(30, ge=1, description="Most Lloyd iterations (each costs n_items x k x d).")
    tol: float = Field(
        0.001, ge=0, lt=1, description="Stop when at most this share of items change cluster in an iteration: the "
        "last moves of a few boundary items do not change what a cluster is about, and cost a full pass each.",
    )  # fmt: skip
    init: Literal["kmeans++", "random"] = Field("kmeans++", description="Seeding (k-means++ spreads centroids).")
    seed: int = Field(0, description="Seeds the initialisation: the same items give the same clusters.")
    max_age: timedelta = Field(
        timedelta(days=30), gt=timedelta(0), description="Items older than this leave the cluster lists (the "
        "channel serves the newest items of a cluster; 30 days like the longest ANN pool).",
    )  # fmt: skip
    seed_max_age: timedelta = Field(
        timedelta(days=60), gt=timedelta(0), description="How long an item's cluster is remembered for use as a "
        "seed (a user's last engaged items can be older than the items served).",
    )  # fmt: skip


class ClusterIndex:
    """Spherical k-means clusters of item vectors, with cluster -> item ids newest first."""

    def __init__(self, config: ClusterIndexConfig | None = None) -> None:
        self.config = config or ClusterIndexConfig()
        self.centroids: np.ndarray | None = None  # [k, d] unit
        self.fit_info: dict[str, Any] = {}
        self._items: dict[int, tuple[int, int]] = {}  # id -> (publish_ns, cluster)
        self._postings = Postings()
        self._cutoff_ns = np.iinfo(np.int64).min

    def __len__(self) -> int:
        return len(self._items)

    def _choose_k(self, n: int) -> int:
        k = self.config.n_clusters or max(1, round(n / self.config.items_per_cluster))
        return int(min(k, self.config.max_clusters, n))

    def fit(self, item_ids: Sequence[int], vectors: Any, publish_times: Any) -> ClusterIndex:
        """Cluster the items (replacing any earlier fit) and index them by cluster, newest first."""
        ids, x, times = self._inputs(item_ids, vectors, publish_times, dim=None)
        if not len(ids):
            raise ValueError("fit needs at least one item")
        k = self._choose_k(len(ids))
        cfg = self.config
        self.centroids, labels, n_iter, converged = spherical_kmeans(x, k, cfg.max_iter, cfg.seed, cfg.init, cfg.tol)
        self.fit_info = {
            "n_items": len(ids), "n_clusters": k, "items_per_cluster": cfg.items_per_cluster,
            "k_rule": "fixed n_clusters" if cfg.n_clusters else "n_items / items_per_cluster, capped",
            "n_iter": n_iter, "converged": converged,
            "mean_cosine": float(np.mean(np.sum(x * self.centroids[labels], axis=1))),
        }  # fmt: skip
        log.info("spherical k-means: %s", self.fit_info)
        self._items, self._postings = {}, Postings()
        self._add(ids, times, labels)
        return self

    def _inputs(self, item_ids: Any, vectors: Any, publish_times: Any, dim: int | None):
        ids = np.asarray(item_ids, np.int64).ravel()
        x = check_vectors(vectors, dim, "item vectors", unit=True)
        times = utc_ns(publish_times) if len(ids) else np.zeros(0, np.int64)
        if not len(ids) == len(x) == len(times):
            raise ValueError(f"got {len(ids)} ids, {len(x)} vectors and {len(times)} publish times")
        return ids, x, times

    def _add(self, ids: np.ndarray, times: np.ndarray, labels: np.ndarray) -> None:
        for j in np.lexsort((ids, times)).tolist():
            item, t, c = int(ids[j]), int(times[j]), int(labels[j])
            if item in self._items:
                self._postings.remove(self._items[item][1], self._items[item][0], item)
            self._items[item] = (t, c)
            if t >= self._cutoff_ns:
                self._postings.add(c, t, item)

    def assign(self, vectors: Any) -> np.ndarray:
        """[n] nearest (max-cosine) cluster of each vector; changes nothing."""
        if self.centroids is None:
            raise ValueError("the index is not fitted")
        x = check_vectors(vectors, self.centroids.shape[1], "vectors", unit=True)
        return _assign(x, self.centroids)[0]

    def join(self, item_ids: Sequence[int], vectors: Any, publish_times: Any) -> np.ndarray:
        """New items join their nearest centroid at publish (centroids stay); returns their clusters."""
        if self.centroids is None:
            raise ValueError("the index is not fitted")
        ids, x, times = self._inputs(item_ids, vectors, publish_times, dim=self.centroids.shape[1])
        labels = _assign(x, self.centroids)[0]
        self._add(ids, times, labels)
        return labels

    def clusters_of(self, item_ids: Sequence[int]) -> np.ndarray:
        """[n] cluster of each item, -1 where the index does not know it."""
        return np.asarray([self._items.get(int(i), (0, -1))[1] for i in np.ravel(item_ids)], np.int64)

    def newest(self, cluster: int, n: int) -> list[int]:
        return self._postings.newest(cluster, n)

    def expire(self, now: Any) -> None:
        """Drop items older than ``max_age`` from the cluster lists and forget those older than ``seed_max_age``."""
        now_ns = utc_ns1(now)
        self._cutoff_ns = max(self._cutoff_ns, now_ns - duration_ns(self.config.max_age))
        self._postings.expire(self._cutoff_ns)
        forget = now_ns - duration_ns(self.config.seed_max_age)
        self._items = {item: v for item, v in self._items.items() if v[0] >= forget}

    def recall(
        self, seed_item_ids: Sequence[int], newest_per_cluster: int, k: int, exclude: Iterable[int] = ()
    ) -> Candidates:
        """Seeds (most recent first) -> their clusters -> each cluster's newest ``newest_per_cluster`` items.

        Clusters more seeds fall in come first (ties: the more recent seed's); the list takes one item per
        cluster per round, so a cut at ``k`` keeps every cluster's newest. A score is the share of the seeds in
        the item's cluster. Seeds the index does not know are left out; ``exclude`` items are passed over."""
        labels = self.clusters_of(seed_item_ids)
        return self.recall_clusters(labels[labels >= 0], newest_per_cluster, k, exclude)

    def recall_clusters(
        self, clusters: Sequence[int], newest_per_cluster: int, k: int, exclude: Iterable[int] = ()
    ) -> Candidates:
        """:meth:`recall` from the seeds' clusters (one per seed, e.g. :meth:`assign` of seed vectors)."""
        if newest_per_cluster < 0 or k < 0:
            raise ValueError(f"newest_per_cluster and k must be >= 0, got {newest_per_cluster} and {k}")
        labels = np.asarray(clusters, np.int64).ravel()
        if not len(labels):
            return Candidates.empty()
        uniq, first, votes = np.unique(labels, return_index=True, return_counts=True)
        order = np.lexsort((first, -votes))
        keys, shares = uniq[order].tolist(), (votes[order] / len(labels)).tolist()
        skip = exclude if isinstance(exclude, set | frozenset) else set(np.asarray(list(exclude), np.int64).tolist())
        ids, src = self._postings.take(keys, [newest_per_cluster] * len(keys), k, skip, top_up=False)
        return Candidates(np.asarray(ids, np.int64), np.asarray([shares[j] for j in src], np.float32))

    def save(self, folder: str | Path) -> Path:
        """Write the index to ``folder/cluster_index.npz`` (atomically)."""
        if self.centroids is None:
            raise ValueError("the index is not fitted")
        values = np.asarray(list(self._items.values()), np.int64).reshape(-1, 2)
        return save_npz_atomic(
            folder,
            _FILE,
            centroids=self.centroids,
            item_id=np.fromiter(self._items, np.int64, count=len(self._items)),
            publish_ns=values[:, 0],
            cluster=values[:, 1],
            cutoff_ns=np.asarray(self._cutoff_ns, np.int64),
            config=np.asarray(self.config.model_dump_json()),
            fit_info=np.asarray(json.dumps(self.fit_info)),
        )

    @classmethod
    def load(cls, folder: str | Path) -> ClusterIndex:
        """The index :meth:`save` wrote to ``folder``."""
        data = load_npz(folder, _FILE)
        index = cls(ClusterIndexConfig(**json.loads(str(data["config"]))))
        index.centroids = data["centroids"].astype(np.float32)
        index.fit_info = json.loads(str(data["fit_info"]))
        index._cutoff_ns = int(data["cutoff_ns"])
        index._add(data["item_id"], data["publish_ns"], data["cluster"])
        return index
