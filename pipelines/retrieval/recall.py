"""A user's recall: every channel over one catalog, merged into one candidate list that remembers its channels.

Channels (each its own index, all fed the same publish events):

* ``1h`` / ``6h`` / ``24h`` / ``30d``: the two-tower model's item vectors in age pools
  (:class:`~pipelines.retrieval.pools.AgePools`), searched with the user's two-tower vector: one model, four chances
  for a new item (it competes for the 1 h pool's quota with the last hour's items only).
* ``category`` / ``keyword``: newest items of the user's interests, read from their engaged items
  (:class:`~pipelines.retrieval.inverted.InvertedIndex`).
* ``cluster``: the newest items of the content clusters of the user's last engaged items
  (:class:`~pipelines.retrieval.clusters.ClusterIndex`, spherical k-means over content-tower vectors; a new item
  joins its nearest cluster at publish).
* ``lookalike``: new items whose engaged users look like this user
  (:class:`~pipelines.retrieval.lookalike.LookalikeIndex`, fed near-line by :meth:`Recall.engage`).

:func:`~pipelines.retrieval.merge.merge` takes each channel's quota in the order of ``RecallConfig.quotas``,
de-duplicates (an item keeps every channel that found it), drops what the user has seen and tops up to ``k``.
Nothing here reads the clock or the hidden truth: times come from the caller, vectors from the models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from pipelines.retrieval.clusters import ClusterIndex, ClusterIndexConfig
from pipelines.retrieval.inverted import InvertedIndex, InvertedIndexConfig
from pipelines.retrieval.lookalike import LookalikeConfig, LookalikeIndex
from pipelines.retrieval.merge import Candidates, Merged, merge
from pipelines.retrieval.pools import AgePools, PoolsConfig


def _default_quotas() -> dict[str, int]:
    # [our choice] About a third of the list for new content (1 h, 6 h, 24 h pools, look-alike), a third for the
    # user's content interests, a third for the month's best matches; the order is the merge's turn order.
    return {"1h": 15, "6h": 15, "24h": 20, "lookalike": 15, "category": 15, "keyword": 15, "cluster": 25, "30d": 80}


class RecallConfig(BaseModel):
    """Every channel's settings, the quotas of the merge and how much history seeds the content channels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pools: PoolsConfig = Field(default_factory=PoolsConfig)
    inverted: InvertedIndexConfig = Field(default_factory=InvertedIndexConfig)
    clusters: ClusterIndexConfig = Field(default_factory=ClusterIndexConfig)
    lookalike: LookalikeConfig = Field(default_factory=LookalikeConfig)
    quotas: dict[str, int] = Field(default_factory=_default_quotas, description="Channel -> candidates it may put "
                                   "in the list, in merge order (a channel left out is not asked).")  # fmt: skip
    seeds: int = Field(20, ge=1, description="Last engaged items that seed the cluster channel.")
    newest_per_cluster: int = Field(5, ge=1, description="Newest items taken from each seed's cluster.")


class Recall:
    """The channels' indexes over one catalog, updated near-line (publish, engage, expire) and queried per user."""

    def __init__(self, cfg: RecallConfig, pools: AgePools, inverted: InvertedIndex, clusters: ClusterIndex,
                 lookalike: LookalikeIndex) -> None:  # fmt: skip
        self.cfg, self.pools, self.inverted, self.clusters, self.lookalike = cfg, pools, inverted, clusters, lookalike

    @classmethod
    def build(cls, items: pd.DataFrame, item_vectors: np.ndarray, content_vectors: np.ndarray, now: Any,
              cfg: RecallConfig | None = None) -> Recall:  # fmt: skip
        """Index a catalog as of ``now``: ``items`` (``item_id``, ``publish_time``, ``category``, ``keywords``),
        their two-tower vectors [n, d] and content-tower vectors [n, c] (the clusters are fitted on these)."""
        cfg = cfg or RecallConfig()
        recall = cls(cfg, AgePools(item_vectors.shape[1], cfg.pools), InvertedIndex(cfg.inverted),
                     ClusterIndex(cfg.clusters), LookalikeIndex(item_vectors.shape[1], cfg.lookalike))  # fmt: skip
        recall.clusters.fit(items["item_id"].to_numpy(np.int64), content_vectors, items["publish_time"])
        recall._index(items, item_vectors, now, join_clusters=False)
        return recall

    def publish(self, items: pd.DataFrame, item_vectors: np.ndarray, content_vectors: np.ndarray, now: Any) -> None:
        """Near-line: newly published items enter every channel (a new item joins its nearest content cluster)."""
        if not len(items):
            return
        self.clusters.join(items["item_id"].to_numpy(np.int64), content_vectors, items["publish_time"])
        self._index(items, item_vectors, now, join_clusters=True)

    def _index(self, items: pd.DataFrame, item_vectors: np.ndarray, now: Any, join_clusters: bool) -> None:
        ids = items["item_id"].to_numpy(np.int64)
        times = pd.to_datetime(items["publish_time"], utc=True)
        self.pools.publish(ids, item_vectors, times, now=now)
        self.inverted.publish(ids, times, items["category"].tolist(), items["keywords"].tolist())
        young = (pd.Timestamp(now) if pd.Timestamp(now).tzinfo else pd.Timestamp(now, tz="UTC")) - times
        fresh = (young <= self.cfg.lookalike.max_age).to_numpy()
        self.lookalike.publish(ids[fresh], times[fresh])

    def engage(self, item_ids: np.ndarray, user_vectors: np.ndarray) -> int:
        """Near-line: engagements (clicks) move the engaged new items' look-alike vectors; others are skipped."""
        return self.lookalike.engage(item_ids, user_vectors, on_unknown="skip")

    def expire(self, now: Any) -> None:
        """Near-line: items past each channel's window leave it."""
        self.pools.expire(now)
        self.inverted.expire(now)
        self.clusters.expire(now)
        self.lookalike.expire(now)

    def channels(self, user_vector: np.ndarray, history: list[int], now: Any, seen: set[int]) -> dict[str, Candidates]:
        """Each asked channel's candidates for one user (``history``: engaged item ids, newest first)."""
        quotas = self.cfg.quotas
        out: dict[str, Candidates] = {}
        pools = [p for p in self.pools.pools if p in quotas]
        if pools:
            k = max(quotas[p] for p in pools) + len(seen)
            for name, (ids, scores) in self.pools.search(user_vector[None, :], k, now).items():
                if name in quotas:
                    keep = ids[0] >= 0
                    out[name] = Candidates(ids[0][keep], scores[0][keep])
        if {"category", "keyword"} & set(quotas):
            interests = self.inverted.user_interests(history, now=now)
            found = self.inverted.recall(interests, max(quotas.get("category", 0), quotas.get("keyword", 0)), seen)
            out |= {name: found[name] for name in ("category", "keyword") if name in quotas}
        if "cluster" in quotas:
            out["cluster"] = self.clusters.recall(history[: self.cfg.seeds], self.cfg.newest_per_cluster,
                                                  quotas["cluster"], seen)  # fmt: skip
        if "lookalike" in quotas:
            out["lookalike"] = self.lookalike.recall(user_vector, quotas["lookalike"], now=now)
        return out

    def recall(self, user_vector: np.ndarray, history: list[int], now: Any, k: int, seen=()) -> Merged:
        """One user's merged candidates: at most ``k`` unseen items, each with the channels that found it."""
        seen = set(np.asarray(list(seen), np.int64).tolist())
        found = self.channels(np.asarray(user_vector, np.float32), list(history), now, seen)
        return merge({name: tuple(c) for name, c in found.items()}, self.cfg.quotas, seen, k)

    def save(self, folder: str | Path) -> Path:
        """Every index into ``folder`` (one file each, each written atomically) and the config."""
        folder = Path(folder)
        for index in (self.pools, self.inverted, self.clusters, self.lookalike):
            index.save(folder)
        (folder / "recall_config.json").write_text(self.cfg.model_dump_json())
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Recall:
        folder = Path(folder)
        cfg = RecallConfig.model_validate_json((folder / "recall_config.json").read_text())
        return cls(cfg, AgePools.load(folder), InvertedIndex.load(folder), ClusterIndex.load(folder),
                   LookalikeIndex.load(folder))  # fmt: skip
