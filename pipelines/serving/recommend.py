"""``/recommend``: user -> recall (every channel) -> rank (the served model and policies) -> top k, each item with
the channels that found it and the policies that touched it.

What the ranker bento packs for it (:func:`pack_retrieval`, its side data, as of the build): the champion two-tower
model's pyfunc, the recall indexes of every item the feature tables know (:class:`~pipelines.retrieval.recall.
Recall`; content clusters on the packed content tower's vectors, else on the raw content vectors) and each user's
last clicks. Without a champion two-tower nothing is packed and the service answers ``/recommend`` with a 503.

Near-line (:meth:`Recommender.refresh`, at most every ``refresh_s`` on a request): the items the near-line state
tracks (every item published in its window, from the publish events) that the indexes do not hold yet are read
from the online store (their content), embedded by the two towers and published into every channel, so an item
published after the build is recommended within minutes; the indexes drop what is past each channel's window.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.settings import Settings

log = logging.getLogger(__name__)

RETRIEVAL_DIR = "retrieval"  # inside the bento model's folder: two_tower/ (pyfunc), recall/, histories.parquet
HISTORY_LEN = 20
_CONTENT = ["item_id", "category", "keywords", "content_vector"]


def catalog_items(home: Path, dataset: str = "sim", until: dt.date | None = None) -> pd.DataFrame:
    """Every item's latest content row (``item_content`` feature files up to ``until``) with its ``publish_time``
    (the rows are stamped at publication)."""
    from pipelines.features.compute import FeatureLayout

    layout = FeatureLayout.for_dataset(home, dataset)
    files = layout.glob("item_content", until=until)
    if not files:
        return pd.DataFrame(columns=[*_CONTENT, "publish_time"])
    frame = pd.concat([pd.read_parquet(f, columns=[*_CONTENT, "event_timestamp"]) for f in files])
    frame = frame.drop_duplicates("item_id", keep="last").rename(columns={"event_timestamp": "publish_time"})
    frame["publish_time"] = pd.to_datetime(frame["publish_time"], utc=True)
    return frame.reset_index(drop=True)


def recent_histories(
    settings: Settings, dataset: str = "sim", days: int = 7, until: dt.date | None = None
) -> pd.DataFrame:
    """``user_id``, ``history``: each user's last ``HISTORY_LEN`` clicked items, newest first, from the clean
    impressions of the last ``days`` partitions up to ``until``."""
    from pipelines.data.contract import Store

    data = Store(settings.data_dir, dataset)
    parts = [d for d in data.partitions("impressions", "clean") if until is None or d <= until][-days:]
    columns = ["user_id", "item_id", "event_time", "click"]
    frames = [data.read("impressions", d, "clean", columns=columns).to_pandas() for d in parts]
    clicks = pd.concat(frames) if frames else pd.DataFrame(columns=columns)
    clicks = clicks[clicks["click"].astype(bool)].sort_values("event_time", ascending=False, kind="stable")
    grouped = clicks.groupby("user_id", sort=True)["item_id"]
    return pd.DataFrame({"user_id": list(grouped.groups), "history": [g.head(HISTORY_LEN).astype(int).tolist()
                                                                       for _, g in grouped]})  # fmt: skip


def content_vectors(items: pd.DataFrame, tower) -> np.ndarray:
    """Unit vectors the cluster channel groups items by: the content tower's when there is one, else raw."""
    if tower is not None:
        return tower.embed(items)[0]
    raw = np.stack([np.asarray(v, np.float32) for v in items["content_vector"]])
    return raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)


def pack_retrieval(settings: Settings, target: Path, tower=None, until: dt.date | None = None) -> bool:
    """Write ``target/retrieval``: the champion two-tower, the recall indexes as of the catalog's newest item and
    users' recent clicks. Returns False (nothing written) when no two-tower version is ``champion``."""
    import mlflow

    from pipelines.catalog.registry import alias_uri
    from pipelines.retrieval.recall import Recall

    uri = alias_uri(settings, "two_tower")
    if uri is None:
        log.info("no two_tower@champion: the bento serves /rank only")
        return False
    folder = target / RETRIEVAL_DIR
    mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder / "two_tower"))
    (folder / "version.txt").write_text(uri.rsplit("/", 1)[-1])
    two = _load_two_tower(folder)
    items = catalog_items(settings.home, "sim", until)
    recall = Recall.build(items, two.embed_items(items), content_vectors(items, tower), items["publish_time"].max())
    recall.save(folder / "recall")
    np.save(folder / "indexed_items.npy", items["item_id"].to_numpy(np.int64))
    recent_histories(settings, "sim", until=until).to_parquet(folder / "histories.parquet")
    return True


def _load_two_tower(folder: Path):
    import mlflow

    from pipelines.training.two_tower import LoadedTwoTower

    wrapper = mlflow.pyfunc.load_model(str(folder / "two_tower")).unwrap_python_model()
    return LoadedTwoTower(wrapper.model, wrapper.encoder, (folder / "version.txt").read_text().strip())


class Recommender:
    """Recall, then the ranker core's ranking, for one user per request; refreshed near-line."""

    def __init__(self, folder: Path, core, features=None, nearline=None, tower=None, refresh_s: float = 60.0) -> None:
        from pipelines.retrieval.recall import Recall

        self.two = _load_two_tower(folder)
        self.recall = Recall.load(folder / "recall")
        histories = pd.read_parquet(folder / "histories.parquet")
        self.histories = {int(u): [int(i) for i in h] for u, h in zip(histories["user_id"], histories["history"],
                                                                         strict=True)}  # fmt: skip
        self.indexed = set(np.load(folder / "indexed_items.npy").tolist())  # what the channels hold (or held)
        self.core, self.features, self.nearline, self.tower = core, features, nearline, tower
        self.refresh_s, self._refreshed = refresh_s, -np.inf
        self._lock = threading.Lock()

    @classmethod
    def load(cls, root: Path, core, features=None, nearline=None, tower=None) -> Recommender | None:
        """The recommender packed under ``root`` (the bento model's folder), or None when none was packed."""
        folder = root / RETRIEVAL_DIR
        return cls(folder, core, features, nearline, tower) if (folder / "recall").is_dir() else None

    def refresh(self, now: dt.datetime) -> int:
        """Publish into every channel the near-line state's items the indexes lack; expire the old. Returns how
        many items were added."""
        if self.nearline is None or self.features is None:
            return 0
        tracked = self.nearline.snapshot()
        ids = [int(i) for i in tracked["item_id"] if int(i) not in self.indexed]
        added = 0
        if ids:
            items = self.features.items(ids).dropna(subset=["content_vector", "publish_time"])
            items = items[pd.to_datetime(items["publish_time"], utc=True) <= pd.Timestamp(now)]
            if len(items):
                items = items.assign(keywords=items["keywords"].map(lambda k: list(k) if k is not None else []))
                self.recall.publish(items.reset_index(drop=True), self.two.embed_items(items),
                                    content_vectors(items, self.tower), now)  # fmt: skip
                added = len(items)
                self.indexed.update(int(i) for i in items["item_id"])
        self.recall.expire(now)
        return added

    def recommend(self, user_id: int, k: int = 20, now: dt.datetime | None = None, user_features: dict | None = None,
                  candidates: int = 200) -> dict:  # fmt: skip
        """Top ``k`` for ``user_id``: recall ``candidates`` (seen items left out), rank them with the served
        policies; each item lists the ``channels`` that recalled it. ``now`` (default: the wall clock) is the
        platform's time: channels are windows of item age, so a simulated catalog is asked as of its own time."""
        now = now or dt.datetime.now(dt.UTC)
        with self._lock:
            if time.monotonic() - self._refreshed >= self.refresh_s:
                self.refresh(now)
                self._refreshed = time.monotonic()
            history = self.histories.get(int(user_id), [])
            row = dict(self.features.user(int(user_id))[0]) if self.features is not None else {}
            frame = pd.DataFrame([{**row, **(user_features or {}), "user_id": int(user_id)}])
            vector = self.two.embed_users(frame, [history])[0]
            merged = self.recall.recall(vector, history, now, candidates, seen=history)
        if not len(merged.ids):
            return {"user_id": int(user_id), "new_user": not history, "items": [], "recalled": 0}
        ranked = self.core.rank(int(user_id), merged.ids.tolist(), user_features, None, now, k)
        channels = dict(zip(merged.ids.tolist(), merged.channels, strict=True))
        for item in ranked["items"]:
            item["channels"] = list(channels[int(item["item_id"])])
        taken = pd.Series(merged.taken_by, dtype=object).value_counts().to_dict()  # channel -> candidates it gave
        return ranked | {"recalled": len(merged.ids), "recalled_by": taken, "retrieval_version": self.two.version}
