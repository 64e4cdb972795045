"""Online features for the ranker: one user and up to a thousand candidate items per request.

User features are looked up per request (they change with every session); item features change by the day
(and by the hour for new items through the push source), so they are cached per item for ``item_ttl_s``
seconds: a request for 200 candidates then costs one user lookup plus lookups of the items not seen lately.
Unknown users and items come back as empty rows (the model's cold path), never as errors. The item's publish
time is the event timestamp of its content row.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pandas as pd

from pipelines.settings import Settings

USER_VIEWS = ("user_profile_fv", "user_activity_fv", "user_recent_fv")
# A user is known when any of these is present (a list feature comes back empty, not null, for an unknown user).
_LIST_FEATURES = ("recent_item_ids", "recent_categories")
ITEM_VIEWS = ("item_stats_fv", "item_content_fv")


class FeastFeatures:
    """Feature lookups through the profile's Feast online store (SQLite locally, Redis on prod)."""

    def __init__(self, settings: Settings, dataset: str = "sim", service: str = "ple_uie_v1", item_ttl_s: float = 300):
        from pipelines.features.store import get_store

        self.store = get_store(settings, dataset)
        projections = self.store.get_feature_service(service).feature_view_projections
        self.user_features = [f"{p.name_to_use()}:{f.name}" for p in projections if p.name in USER_VIEWS
                              for f in p.features]  # fmt: skip
        self.item_features = [f"{p.name_to_use()}:{f.name}" for p in projections if p.name in ITEM_VIEWS
                              for f in p.features] + ["item_content_fv:author_id"]  # fmt: skip
        self.author_features = [f"{p.name_to_use()}:{f.name}" for p in projections if p.name == "author_stats_fv"
                                for f in p.features]  # fmt: skip
        self.item_ttl_s = item_ttl_s
        self._cache: dict[int, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def user(self, user_id: int) -> tuple[dict[str, Any], bool]:
        """The user's features and whether the store knows the user."""
        response = self.store.get_online_features(features=self.user_features, entity_rows=[{"user_id": user_id}])
        row = {k: v[0] for k, v in response.to_dict().items() if k != "user_id"}
        known = any(v is not None for k, v in row.items() if k not in _LIST_FEATURES)
        return row, known

    def users(self, user_ids: list[int]) -> tuple[pd.DataFrame, list[bool]]:
        """Features of many users in one lookup (one row each, in order) and whether the store knows each, by the
        rule of :meth:`user`."""
        rows = [{"user_id": int(u)} for u in user_ids]
        frame = pd.DataFrame(self.store.get_online_features(features=self.user_features, entity_rows=rows).to_dict())
        scalar = [c for c in frame.columns if c != "user_id" and c not in _LIST_FEATURES]
        known = frame[scalar].notna().any(axis=1).tolist() if scalar else [False] * len(frame)
        return frame, known

    def items(self, item_ids: list[int]) -> pd.DataFrame:
        """One row per id (in order) with item, content and author features and ``publish_time``."""
        now = time.monotonic()
        with self._lock:
            fresh = {i: row for i, (t, row) in self._cache.items() if now - t < self.item_ttl_s}
        missing = [i for i in dict.fromkeys(item_ids) if i not in fresh]
        if missing:
            for item_id, row in zip(missing, self._lookup(missing), strict=True):
                fresh[item_id] = row
            with self._lock:
                self._cache.update({i: (now, fresh[i]) for i in missing})
                if len(self._cache) > 200_000:  # keep the cache bounded: drop the oldest half
                    for key in sorted(self._cache, key=lambda k: self._cache[k][0])[:100_000]:
                        del self._cache[key]
        return pd.DataFrame([fresh[i] for i in item_ids])

    def _lookup(self, item_ids: list[int]) -> list[dict[str, Any]]:
        response = self.store.get_online_features(features=self.item_features,
                                                  entity_rows=[{"item_id": i} for i in item_ids])  # fmt: skip
        values = response.to_dict()
        names = list(response.proto.metadata.feature_names.val)
        stamps = response.proto.results[names.index("category")].event_timestamps
        published = [pd.Timestamp(s.seconds + s.nanos / 1e9, unit="s", tz="UTC") if s.seconds else None
                     for s in stamps]  # fmt: skip
        authors = [a if a is not None else -1 for a in values["author_id"]]
        author_values = self.store.get_online_features(
            features=self.author_features, entity_rows=[{"author_id": a} for a in authors]
        ).to_dict()
        rows = []
        for index, item_id in enumerate(item_ids):
            row = {k: v[index] for k, v in values.items()}
            row |= {k: v[index] for k, v in author_values.items() if k != "author_id"}
            row["item_id"], row["publish_time"] = item_id, published[index]
            if row.get("author_id") == -1:
                row["author_id"] = None
            rows.append(row)
        return rows
