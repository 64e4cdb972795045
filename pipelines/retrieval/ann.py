"""Approximate nearest neighbours over unit vectors: the HNSW index behind the recall pools (usearch).

Inner-product search over L2-normalised vectors (= cosine). Why usearch rather than faiss-cpu or hnswlib
(measured in ``benchmarks/ann.py``, figures in ``benchmarks/README.md`` "ANN for the recall pools"): it removes
ids in place (faiss's HNSW cannot, so expiry would mean filtering plus periodic rebuilds), adds one item into a
1M-item index in 0.4-0.7 ms, and its wheel installs here (hnswlib compiles C++ at install time). faiss was faster
per query (1M x 64: 0.31 against 0.57 ms p50 at recall 0.99); this class keeps the library swappable.

Thread safety: every public method takes the instance's lock, so an ``AnnIndex`` can be shared by threads (a
near-line writer adding and removing, request threads searching); calls run one at a time. Each call itself runs
on ``AnnConfig.threads`` threads (default 1: the serving process scales by workers, not by threads per query).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipelines.retrieval._io import check_ids, save_npz_atomic, unit_rows

INDEX_FILE = "ann.npz"


class AnnConfig(BaseModel):
    """HNSW settings; the defaults are the ones measured in ``benchmarks/ann.py``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Graph degree (HNSW's M): more links, better recall, slower adds and more memory.
    connectivity: int = Field(16, ge=2, le=256)
    # Candidate list while inserting (ef_construction).
    expansion_add: int = Field(100, ge=1)
    # Candidate list while searching (ef_search); a search for k results explores at least k.
    expansion_search: int = Field(128, ge=1)
    threads: int = Field(1, ge=1)


class AnnIndex:
    """An HNSW index of unit vectors keyed by non-negative int64 ids; search returns the largest inner products.

    Args:
        dim: Vector dimension.
        config: HNSW settings (defaults: :class:`AnnConfig`).
    """

    def __init__(self, dim: int, config: AnnConfig | None = None):
        from usearch.index import Index

        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = dim
        self.config = config or AnnConfig()
        self._lock = threading.RLock()
        self._index = Index(
            ndim=dim,
            metric="ip",
            dtype="f32",
            connectivity=self.config.connectivity,
            expansion_add=self.config.expansion_add,
            expansion_search=self.config.expansion_search,
        )

    def __len__(self) -> int:
        with self._lock:
            return len(self._index)

    def contains(self, ids) -> np.ndarray:
        """A bool per id: is it in the index."""
        arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        with self._lock:
            if not arr.size or not len(self._index):
                return np.zeros(arr.shape, dtype=bool)
            return np.asarray(self._index.contains(arr.astype(np.uint64)), dtype=bool).reshape(-1)

    def add(self, ids, vectors) -> None:
        """Add items (vectors are normalised here). Raises ValueError on bad input or ids already present."""
        keys = check_ids(ids)
        rows = unit_rows(vectors, self.dim)
        if len(rows) != len(keys):
            raise ValueError(f"{len(keys)} ids for {len(rows)} vectors")
        if not len(keys):
            return
        with self._lock:
            present = self.contains(keys)
            if present.any():
                raise ValueError(f"ids already in the index (remove them first): {keys[present][:10].tolist()}")
            self._index.add(keys.astype(np.uint64), rows, threads=self.config.threads)

    def remove(self, ids) -> None:
        """Remove items. Raises ValueError if any id is not in the index (nothing is removed then)."""
        keys = check_ids(ids)
        if not len(keys):
            return
        with self._lock:
            missing = ~self.contains(keys)
            if missing.any():
                raise ValueError(f"ids not in the index: {keys[missing][:10].tolist()}")
            self._index.remove(keys.astype(np.uint64), threads=self.config.threads)

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items by inner product with each (normalised) query.

        Returns:
            ``(ids, scores)``, each [n_queries, k], best first: int64 ids padded with -1 and float32 cosine scores
            padded with NaN where the index holds fewer than ``k`` items.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        rows = unit_rows(queries, self.dim, name="queries")
        ids = np.full((len(rows), k), -1, dtype=np.int64)
        scores = np.full((len(rows), k), np.nan, dtype=np.float32)
        with self._lock:
            if not len(self._index):
                return ids, scores
            found = self._index.search(rows, k, threads=self.config.threads)
        # One query comes back as ``Matches`` (trimmed to what was found); several as ``BatchMatches``, whose rows
        # past ``counts`` hold arbitrary keys: keep only the counted ones.
        counts = np.asarray(getattr(found, "counts", [len(found.keys)])).reshape(-1)
        keys = np.asarray(found.keys).reshape(len(rows), -1)
        dists = np.asarray(found.distances).reshape(len(rows), -1)
        valid = np.arange(keys.shape[1])[None, :] < counts[:, None]
        ids[:, : keys.shape[1]][valid] = keys[valid].astype(np.int64)
        # usearch's "ip" distance is 1 - <q, v>.
        scores[:, : keys.shape[1]][valid] = 1.0 - dists[valid]
        return ids, scores

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The index and its settings as arrays (to save), keys starting with ``prefix``."""
        meta = {"dim": self.dim, "config": self.config.model_dump()}
        with self._lock:
            blob = np.frombuffer(bytes(self._index.save()), dtype=np.uint8)
        return {f"{prefix}index": blob, f"{prefix}meta": np.array(json.dumps(meta))}

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "") -> AnnIndex:
        """The inverse of :meth:`to_arrays`."""
        from usearch.index import Index

        meta = json.loads(str(arrays[f"{prefix}meta"]))
        out = cls(meta["dim"], AnnConfig(**meta["config"]))
        out._index = Index.restore(np.asarray(arrays[f"{prefix}index"]).tobytes())
        # The file keeps the graph and its degree, not the expansion factors.
        out._index.expansion_add = out.config.expansion_add
        out._index.expansion_search = out.config.expansion_search
        return out

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/ann.npz`` atomically (temporary file, then rename); returns its path."""
        path = Path(folder) / INDEX_FILE
        save_npz_atomic(path.parent, path.name, **self.to_arrays())
        return path

    @classmethod
    def load(cls, folder: str | Path) -> AnnIndex:
        """An index saved by :meth:`save`."""
        with np.load(Path(folder) / INDEX_FILE) as arrays:
            return cls.from_arrays(arrays)
