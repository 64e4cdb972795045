"""Look-alike recall for new items (industry practice, MODELS.md §9).

A new item's look-alike vector is the mean of the (two-tower) user vectors of the users who engaged with it,
updated near-line as engagements arrive: the running mean v <- v + (u - v)/n, applied to a batch of c engagements
of one item at once as v <- v + (sum u - c v)/(n + c), which is the same number. Recall scores an item by the
inner product of the requesting user's vector with the look-alike vector, unnormalised on purpose: <u, mean u_i>
= mean <u, u_i>, the average similarity between the user and the item's audience.

Only new items are held (``max_age``, 24 h by default; older items have enough engagement for the ranker's other
channels), so recall is an exact numpy scan over them, not an ANN: one [n_active, d] @ [d] product plus an
``argpartition``, linear in the active items. At d = 32 on a loaded 2-core box it took ~0.15-0.3 ms per request
over 5,000 active items and ~0.7 ms over 20,000; the simulator publishes a few hundred items a day (authors are
5% of users, 0.25 items each a day), far inside that. Past ~10,000 active items, build an ANN over
:meth:`LookalikeIndex.snapshot` instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipelines.retrieval.clusters import check_vectors
from pipelines.retrieval.inverted import duration_ns, load_npz, save_npz_atomic, utc_ns, utc_ns1
from pipelines.retrieval.merge import Candidates

_FILE = "lookalike_index.npz"


class LookalikeConfig(BaseModel):
    """Ages and thresholds of the look-alike index. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_age: timedelta = Field(
        timedelta(hours=24), gt=timedelta(0), description="Items older than this drop out: look-alike is for items "
        "too new for learned embeddings (MODELS.md §9 refreshes items up to 24 h).",
    )  # fmt: skip
    min_engagements: int = Field(
        2, ge=1, description="Engagements an item needs before it is recalled: one user's vector is that user's "
        "taste, not an audience; the item is not starved meanwhile (the other new-item channels serve it).",
    )  # fmt: skip


class LookalikeIndex:
    """New items' look-alike vectors (running means of engaged users' vectors) with exact inner-product recall."""

    def __init__(self, dim: int, config: LookalikeConfig | None = None) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self.config = config or LookalikeConfig()
        self._row: dict[int, int] = {}
        self._ids = np.zeros(0, np.int64)
        self._t = np.zeros(0, np.int64)  # publish time, ns
        self._n = np.zeros(0, np.int64)  # engagements so far
        self._v = np.zeros((0, dim), np.float32)  # look-alike vectors (running means)

    def __len__(self) -> int:
        return len(self._row)

    def _grow(self, extra: int) -> None:
        size, cap = len(self._row), len(self._ids)
        if size + extra <= cap:
            return
        cap = max(size + extra, 2 * cap, 64)
        self._ids = np.resize(self._ids, cap)
        self._t = np.resize(self._t, cap)
        self._n = np.resize(self._n, cap)
        self._v = np.concatenate([self._v[:size], np.zeros((cap - size, self.dim), np.float32)])

    def publish(self, item_ids: Sequence[int], publish_times: Any) -> None:
        """Register new items (no engagements yet). Re-publishing keeps an item's engagements, updates its time."""
        ids = np.asarray(item_ids, np.int64).ravel()
        times = utc_ns(publish_times) if len(ids) else np.zeros(0, np.int64)
        if len(ids) != len(times):
            raise ValueError(f"got {len(ids)} ids and {len(times)} publish times")
        self._grow(len(ids))
        for item, t in zip(ids.tolist(), times.tolist(), strict=True):
            row = self._row.get(item)
            if row is None:
                row = self._row[item] = len(self._row)
                self._ids[row], self._n[row], self._v[row] = item, 0, 0.0
            self._t[row] = t

    def known(self, item_ids: Sequence[int]) -> np.ndarray:
        """[n] bool: which items the index holds (to filter an engagement stream that includes old items)."""
        return np.asarray([int(i) in self._row for i in np.ravel(item_ids)], bool)

    def engage(self, item_ids: Sequence[int], user_vectors: Any, on_unknown: Literal["raise", "skip"] = "raise") -> int:
        """Fold engagements (item i engaged by the user of ``user_vectors[i]``) into the running means.

        Returns the number applied. An item the index does not hold (never published, or expired) is a
        ValueError, or is skipped with ``on_unknown="skip"``; a vector of the wrong dimension or with NaN is a
        ValueError, and then nothing is applied."""
        ids = np.asarray(item_ids, np.int64).ravel()
        u = check_vectors(user_vectors, self.dim, "user vectors")
        if len(u) != len(ids):
            raise ValueError(f"got {len(ids)} item ids and {len(u)} user vectors")
        rows = np.asarray([self._row.get(i, -1) for i in ids.tolist()], np.int64)
        if (rows < 0).any():
            if on_unknown == "raise":
                raise ValueError(f"unknown items (not published or expired): {ids[rows < 0][:5].tolist()}")
            ids, u, rows = ids[rows >= 0], u[rows >= 0], rows[rows >= 0]
        if not len(rows):
            return 0
        uniq, inv, c = np.unique(rows, return_inverse=True, return_counts=True)
        sums = np.zeros((len(uniq), self.dim), np.float64)
        np.add.at(sums, inv, u)
        n_new = self._n[uniq] + c
        v = self._v[uniq].astype(np.float64)
        self._v[uniq] = (v + (sums - c[:, None] * v) / n_new[:, None]).astype(np.float32)
        self._n[uniq] = n_new
        return len(rows)

    def vectors(self, item_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """[n, d] look-alike vectors and [n] engagement counts of held items (a KeyError for others)."""
        rows = np.asarray([self._row[int(i)] for i in np.ravel(item_ids)], np.int64)
        return self._v[rows].copy(), self._n[rows].copy()

    def snapshot(self, min_engagements: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ids, vectors and counts of the items with at least ``min_engagements`` (e.g. to build an ANN)."""
        size, need = len(self._row), min_engagements or self.config.min_engagements
        keep = np.flatnonzero(self._n[:size] >= need)
        return self._ids[keep].copy(), self._v[keep].copy(), self._n[keep].copy()

    def expire(self, now: Any) -> None:
        """Drop items published more than ``max_age`` before ``now`` (and compact the arrays)."""
        size = len(self._row)
        keep = np.flatnonzero(self._t[:size] >= utc_ns1(now) - duration_ns(self.config.max_age))
        self._ids, self._t, self._n, self._v = (a[keep].copy() for a in (self._ids, self._t, self._n, self._v))
        self._row = {item: row for row, item in enumerate(self._ids.tolist())}

    def recall(self, user_vector: Any, k: int, min_engagements: int | None = None, now: Any = None) -> Candidates:
        """The ``k`` items of largest <user vector, look-alike vector>, best first, among items with at least
        ``min_engagements`` (default from the config) and, given ``now``, younger than ``max_age``."""
        u = check_vectors(np.reshape(user_vector, (1, -1)), self.dim, "user vector")[0]
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        size, need = len(self._row), min_engagements or self.config.min_engagements
        scores = self._v[:size] @ u  # [n_active]
        ok = self._n[:size] >= need
        if now is not None:
            ok &= self._t[:size] >= utc_ns1(now) - duration_ns(self.config.max_age)
        scores[~ok] = -np.inf
        k = min(k, int(ok.sum()))
        if k == 0:
            return Candidates.empty()
        top = np.argpartition(scores, size - k)[size - k :] if k < size else np.arange(size)
        top = top[np.lexsort((self._ids[top], -scores[top]))]
        return Candidates(self._ids[top].copy(), scores[top].astype(np.float32))

    def save(self, folder: str | Path) -> Path:
        """Write the index to ``folder/lookalike_index.npz`` (atomically)."""
        size = len(self._row)
        return save_npz_atomic(
            folder,
            _FILE,
            item_id=self._ids[:size],
            publish_ns=self._t[:size],
            n=self._n[:size],
            vectors=self._v[:size],
            dim=np.asarray(self.dim),
            config=np.asarray(self.config.model_dump_json()),
        )

    @classmethod
    def load(cls, folder: str | Path) -> LookalikeIndex:
        """The index :meth:`save` wrote to ``folder``."""
        data = load_npz(folder, _FILE)
        index = cls(int(data["dim"]), LookalikeConfig(**json.loads(str(data["config"]))))
        index._ids, index._t, index._n = data["item_id"], data["publish_ns"], data["n"]
        index._v = data["vectors"].astype(np.float32)
        index._row = {item: row for row, item in enumerate(index._ids.tolist())}
        return index
