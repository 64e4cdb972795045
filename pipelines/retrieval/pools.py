"""Recall pools by item age (MODELS.md §8): the same item vectors in several ANN pools (1 h, 6 h, 24 h, 30 days).

One two-tower model, several pools: a new item competes for the top-k of the 1 h pool with the last hour's items
only, not with a month of proven ones, so new items get more chances at no extra training cost. An item goes into
every pool whose window covers its age when it is published, and leaves each pool when it gets older than that
pool's window: :meth:`AgePools.expire` removes it from the index, and :meth:`AgePools.search` drops it at query
time even before that (an item past its window is never returned).

One index per pool, not one index filtered by age: with items published evenly, the 1 h pool holds 1/720 of the
30 d pool, so a filtered top-100 from a single HNSW would have to walk ~72,000 candidates, close to an exact scan
of the month (27-34 ms a query at 1M x 32-64 on one busy core, ``benchmarks/README.md``), against well under a
millisecond for a small graph. The price is one add per pool per new item (4 adds; 0.4-0.7 ms into a 1M-item pool,
less into the small ones) and the small pools' memory (1 h + 6 h + 24 h hold ~4 % of the 30 d pool).

Time is whatever the caller says it is (``now``, the publish times): nothing reads the clock, so a near-line task
replaying a data interval gets the same pools. Times are timezone-aware or naive UTC, anything pandas parses.

Thread safety: every public method takes the pools' lock (searches and writes run one at a time).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelines.retrieval._io import check_ids, save_npz_atomic, unit_rows, utc_ns, utc_ns1
from pipelines.retrieval.ann import AnnConfig, AnnIndex

POOLS_FILE = "pools.npz"
HOUR_NS = 3_600 * 10**9


class PoolsConfig(BaseModel):
    """Pool windows in hours by name, and the ANN settings every pool shares."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    windows_hours: dict[str, float] = Field(default_factory=lambda: {"1h": 1, "6h": 6, "24h": 24, "30d": 720})
    ann: AnnConfig = Field(default_factory=AnnConfig)

    @field_validator("windows_hours")
    @classmethod
    def _positive(cls, windows: dict[str, float]) -> dict[str, float]:
        if not windows:
            raise ValueError("at least one pool window is needed")
        bad = {name: hours for name, hours in windows.items() if not hours > 0}
        if bad:
            raise ValueError(f"pool windows must be positive hours, got {bad}")
        return windows


class AgePools:
    """ANN pools over one vector space, one :class:`AnnIndex` per age window.

    Args:
        dim: Vector dimension (the two-tower model's output).
        config: Pool windows and ANN settings (defaults: :class:`PoolsConfig`).
    """

    def __init__(self, dim: int, config: PoolsConfig | None = None):
        self.dim = dim
        self.config = config or PoolsConfig()
        self._windows_ns = {name: int(hours * HOUR_NS) for name, hours in self.config.windows_hours.items()}
        self._indexes = {name: AnnIndex(dim, self.config.ann) for name in self._windows_ns}
        # Per pool: item id -> publish time (ns); the query-time age filter reads it.
        self._times: dict[str, dict[int, int]] = {name: {} for name in self._windows_ns}
        self._lock = threading.RLock()

    @property
    def pools(self) -> list[str]:
        return list(self._windows_ns)

    def counts(self) -> dict[str, int]:
        """Items per pool (including any past their window until the next :meth:`expire`)."""
        with self._lock:
            return {name: len(times) for name, times in self._times.items()}

    def publish(self, item_ids, vectors, publish_times, now=None) -> dict[str, int]:
        """Add items to every pool whose window covers their age at ``now``.

        Args:
            item_ids: Distinct non-negative ints, none already in any pool.
            vectors: [n, dim] item vectors (normalised here).
            publish_times: One timestamp per item.
            now: The time the ages are measured at; default the newest of ``publish_times`` (near-line filling
                publishes items as they appear; a backfill passes the backfill's time).

        Returns:
            Items added per pool.

        Raises:
            ValueError: Bad ids (duplicates, already pooled), bad vectors (shape, NaN), a time after ``now``.
        """
        ids = check_ids(item_ids, "item_ids")
        rows = unit_rows(vectors, self.dim)
        times = utc_ns(publish_times) if len(ids) else np.zeros(0, dtype=np.int64)
        if not len(rows) == len(ids) == len(times):
            raise ValueError(f"{len(ids)} item_ids, {len(rows)} vectors and {len(times)} publish_times")
        if not len(ids):
            return dict.fromkeys(self._windows_ns, 0)
        at = int(times.max()) if now is None else utc_ns1(now)
        if (times > at).any():
            raise ValueError(f"publish_times after now: items {ids[times > at][:10].tolist()}")
        added = {}
        with self._lock:
            pooled = [int(i) for i in ids if any(int(i) in t for t in self._times.values())]
            if pooled:
                raise ValueError(f"item_ids already in a pool: {pooled[:10]}")
            for name, window in self._windows_ns.items():
                keep = at - times <= window
                self._indexes[name].add(ids[keep], rows[keep])
                self._times[name].update(zip(ids[keep].tolist(), times[keep].tolist(), strict=True))
                added[name] = int(keep.sum())
        return added

    def expire(self, now) -> dict[str, int]:
        """Remove from each pool the items older than its window at ``now``; returns items removed per pool."""
        at = utc_ns1(now)
        removed = {}
        with self._lock:
            for name, window in self._windows_ns.items():
                times = self._times[name]
                if not times:
                    removed[name] = 0
                    continue
                ids = np.fromiter(times.keys(), dtype=np.int64, count=len(times))
                published = np.fromiter(times.values(), dtype=np.int64, count=len(times))
                old = ids[at - published > window]
                self._indexes[name].remove(old)
                for item in old.tolist():
                    del times[item]
                removed[name] = len(old)
        return removed

    def search(self, user_vectors, k_per_pool: int, now) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Top ``k_per_pool`` items of each pool for each user vector, among items aged 0 to the window at ``now``.

        Returns:
            ``{pool: (ids, scores)}``, each [n_users, k_per_pool], best first, padded with -1 / NaN where a pool
            has fewer eligible items.
        """
        if k_per_pool < 1:
            raise ValueError(f"k_per_pool must be at least 1, got {k_per_pool}")
        queries = unit_rows(user_vectors, self.dim, name="user_vectors")
        at = utc_ns1(now)
        with self._lock:
            return {name: self._search_pool(name, queries, k_per_pool, at) for name in self._windows_ns}

    def _search_pool(self, name: str, queries: np.ndarray, k: int, at: int) -> tuple[np.ndarray, np.ndarray]:
        """One pool's top-k with the age filter: fetch k, drop ineligible items, fetch twice as many for short rows."""
        index, times, oldest = self._indexes[name], self._times[name], at - self._windows_ns[name]
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), np.nan, dtype=np.float32)
        todo, fetch = np.arange(len(queries)), min(k, len(times))
        while len(todo) and fetch:
            found, found_scores = index.search(queries[todo], fetch)
            short = []
            for row, row_ids, row_scores in zip(todo, found, found_scores, strict=True):
                published = np.array([times.get(item, at + 1) for item in row_ids.tolist()], dtype=np.int64)
                keep = (row_ids >= 0) & (published >= oldest) & (published <= at)
                if keep.sum() < k and fetch < len(times):
                    short.append(row)
                    continue
                n = min(k, int(keep.sum()))
                ids[row, :n], scores[row, :n] = row_ids[keep][:n], row_scores[keep][:n]
            todo, fetch = np.asarray(short, dtype=np.int64), min(2 * fetch, len(times))
        return ids, scores

    def save(self, folder: str | Path) -> Path:
        """Write every pool to ``folder/pools.npz`` atomically (temporary file, then rename); returns its path."""
        arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps({"dim": self.dim, "pools": self.pools}))}
        arrays["config"] = np.array(self.config.model_dump_json())
        with self._lock:
            for i, name in enumerate(self.pools):
                times = self._times[name]
                arrays[f"p{i}_ids"] = np.fromiter(times.keys(), dtype=np.int64, count=len(times))
                arrays[f"p{i}_times"] = np.fromiter(times.values(), dtype=np.int64, count=len(times))
                arrays.update(self._indexes[name].to_arrays(prefix=f"p{i}_"))
        path = Path(folder) / POOLS_FILE
        save_npz_atomic(path.parent, path.name, **arrays)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> AgePools:
        """Pools saved by :meth:`save`."""
        with np.load(Path(folder) / POOLS_FILE) as arrays:
            meta = json.loads(str(arrays["meta"]))
            out = cls(meta["dim"], PoolsConfig.model_validate_json(str(arrays["config"])))
            for i, name in enumerate(meta["pools"]):
                out._indexes[name] = AnnIndex.from_arrays(arrays, prefix=f"p{i}_")
                pairs = zip(arrays[f"p{i}_ids"].tolist(), arrays[f"p{i}_times"].tolist(), strict=True)
                out._times[name] = dict(pairs)
        return out
