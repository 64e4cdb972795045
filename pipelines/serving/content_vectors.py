"""The content tower as serving and the feature pipeline use it: a loaded version that maps item content to unit
vectors (MODELS.md §7), and the rows it writes to Feast's ``item_content_tower_fv``.

One :class:`TowerEmbedder` embeds the known-items index of the ranker's content-kNN policy, a held-out day's new
items in evaluation, every item of a catalog after training, and one brand-new item at publish time: the same
weights, so every vector lives in the same space, and each row names the version that made it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipelines.settings import Settings

log = logging.getLogger(__name__)

TOWER_MODEL = "content_tower"
# What the tower reads; a frame without one of them (a scoring frame with no keywords) embeds it as unknown.
CONTENT_FIELDS = ("category", "keywords", "content_vector")


@dataclass
class TowerEmbedder:
    """A loaded content tower version (its torch module and content encoder)."""

    model: Any
    encoder: Any
    version: str

    @classmethod
    def from_pyfunc(cls, wrapper: Any, version: str) -> TowerEmbedder:
        """From the unwrapped pyfunc (:class:`~pipelines.training.content_tower.ContentTowerModel`)."""
        return cls(wrapper.model, wrapper.encoder, str(version))

    def embed(self, items: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """[n, d] unit vectors (float32) and [n] predicted quality of ``items`` (``item_id`` and content)."""
        from pipelines.training.content_tower import embed_items

        frame = items.assign(**{c: None for c in CONTENT_FIELDS if c not in items})
        if "item_id" not in frame:
            frame = frame.assign(item_id=np.arange(len(frame)))
        out = embed_items(self.model, self.encoder, frame.reset_index(drop=True))
        vectors = np.stack(out["vector"].to_list()).astype(np.float32) if len(out) else np.zeros((0, 1), np.float32)
        return vectors, out["quality"].to_numpy(np.float32)

    def feature_rows(self, items: pd.DataFrame, stamps: Any) -> pd.DataFrame:
        """Rows of ``item_content_tower_fv``: ``item_id``, ``event_timestamp`` (``stamps``: one timestamp or one
        per item), ``content_tower_vector``, ``content_quality``, ``content_tower_version``."""
        vectors, quality = self.embed(items)
        return pd.DataFrame({
            "item_id": items["item_id"].to_numpy(np.int64),
            # Microseconds, as every feature table is stamped (DuckDB will not compare ns with us stamps).
            "event_timestamp": pd.to_datetime(pd.Series(stamps, index=range(len(items))) if np.ndim(stamps)
                                              else [stamps] * len(items), utc=True).astype("datetime64[us, UTC]"),
            "content_tower_vector": [v.tolist() for v in vectors],
            "content_quality": quality.astype(np.float32),
            "content_tower_version": self.version,
        })  # fmt: skip


def load_tower(settings: Settings, alias: str = "champion") -> TowerEmbedder | None:
    """The content tower version ``alias`` points at, or None when no version has it (serving then falls back to
    the raw content vectors)."""
    from pipelines.catalog.registry import load_by_alias

    loaded = load_by_alias(settings, TOWER_MODEL, alias)
    if loaded is None:
        log.info("no %s@%s: content-kNN uses the raw content vectors", TOWER_MODEL, alias)
        return None
    return TowerEmbedder.from_pyfunc(*loaded)
