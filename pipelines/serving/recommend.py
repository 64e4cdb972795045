"""``/recommend``: user -> recall (every channel, or those a request names) -> rank (the served model and
policies) -> top k, each item with the channels that found it and the policies that touched it.

What the ranker bento packs for it (:func:`pack_retrieval`, its side data): the champion two-tower model's pyfunc,
the recall indexes (:class:`~pipelines.retrieval.recall.Recall`; content clusters on the packed content tower's
vectors, else on the raw content vectors) and each user's last clicks. The indexes are those ``train_models``
built after training, as of the training window's end (:mod:`pipelines.retrieval.build`), when they were built
for the champions the bento packs; else they are built at packing over every item the feature tables know.
Without a champion two-tower nothing is packed and the service answers ``/recommend`` with a 503.

Near-line (:meth:`Recommender.refresh`, at most every ``refresh_s`` on a request, at that request's ``now``): the
items the near-line state tracks (every item published in its window, from the publish events) that the indexes
do not hold yet are read from the online store (their content), embedded by the two towers and published into
every channel, so an item published after the index build is recommended within minutes; the engagements the
near-line writer logged (clicks on new items) move the look-alike vectors; the indexes drop what is past each
channel's window.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
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


def publish_items(recall, items: pd.DataFrame, two, tower, now) -> int:
    """Near-line: ``items`` (their content, as filed or as read from the online store) enter every channel of
    ``recall``, embedded by the two-tower ``two`` (clusters on ``tower``'s vectors, else raw). Returns how many."""
    items = items.reset_index(drop=True)
    items = items.assign(keywords=items["keywords"].map(lambda k: list(k) if k is not None else []))
    recall.publish(items, two.embed_items(items), content_vectors(items, tower), now)
    return len(items)


def pack_retrieval(settings: Settings, target: Path, tower=None, until: dt.date | None = None) -> bool:
    """Write ``target/retrieval``: the champion two-tower, the recall indexes and users' recent clicks.

    The indexes ``train_models`` built after training (:func:`~pipelines.retrieval.build.build_indexes`) are
    copied when their manifest names the champion two-tower and ``tower``'s version (and ``until``, when given);
    items published after them come in near-line, except those already past the near-line state's window, which
    are published into the copy here (:func:`_publish_unfollowed`). Otherwise they are built here, over the
    catalog up to ``until``. The histories are re-read up to ``until`` either way: users' clicks are as of the build.

    Returns:
        False (nothing written) when no two-tower version is ``champion``.
    """
    import shutil

    from pipelines.catalog.registry import alias_uri
    from pipelines.retrieval.build import prebuilt, read_manifest, write_indexes

    uri = alias_uri(settings, "two_tower")
    if uri is None:
        log.info("no two_tower@champion: the bento serves /rank only")
        return False
    folder = target / RETRIEVAL_DIR
    source = prebuilt(settings, "sim", uri.rsplit("/", 1)[-1], None if tower is None else str(tower.version))
    if source is not None and until is not None and read_manifest(source)["until"] != until.isoformat():
        source = None
    if source is None:
        write_indexes(settings, folder, uri, tower, "sim", until)
        return True
    log.info("packing the recall indexes built in %s", source)
    shutil.copytree(source, folder)
    _publish_unfollowed(settings, folder, tower, until)
    recent_histories(settings, "sim", until=until).to_parquet(folder / "histories.parquet")
    return True


def _publish_unfollowed(settings: Settings, folder: Path, tower, until: dt.date | None) -> int:
    """Publish into the copied indexes the catalog's items the near-line state no longer follows: published after
    the build but more than its window (less an hour of slack) before the catalog's newest item, or every item
    after the build when the service has no near-line state. Returns how many were published."""
    from pipelines.retrieval.recall import Recall
    from pipelines.serving.policies import PolicyConfig

    items = catalog_items(settings.home, "sim", until)
    indexed = np.load(folder / "indexed_items.npy")
    newest = items["publish_time"].max()
    cutoff = newest
    if settings.ranker_nearline:
        window = PolicyConfig(**settings.ranker_policies).exposure.window_hours
        cutoff = newest - pd.Timedelta(hours=window - 1)
    late = items[~items["item_id"].isin(indexed) & (items["publish_time"] <= cutoff)].reset_index(drop=True)
    if late.empty:
        return 0
    two, recall = load_packed_two_tower(folder), Recall.load(folder / "recall")
    recall.publish(late, two.embed_items(late), content_vectors(late, tower), newest)
    recall.expire(newest)
    recall.save(folder / "recall")
    np.save(folder / "indexed_items.npy", np.concatenate([indexed, late["item_id"].to_numpy(np.int64)]))
    log.info("published %d items of the catalog the near-line state no longer follows into the packed indexes",
             len(late))  # fmt: skip
    return len(late)


def load_packed_two_tower(folder: Path):
    """The two-tower pyfunc written under ``folder`` (``two_tower/`` and ``version.txt``), ready to embed."""
    import mlflow

    from pipelines.training.two_tower import LoadedTwoTower

    wrapper = mlflow.pyfunc.load_model(str(folder / "two_tower")).unwrap_python_model()
    return LoadedTwoTower(wrapper.model, wrapper.encoder, (folder / "version.txt").read_text().strip())


class ChannelError(ValueError):
    """A ``/recommend`` request named recall channels the service does not have."""


def channel_quotas(quotas: dict[str, int], channels: list[str] | None, candidates: int) -> dict[str, int]:
    """The merge quotas of a request that recalls only from ``channels`` (None: every channel, as configured).

    The named channels keep their merge order and share the request's ``candidates`` in proportion to their
    configured quotas (never less than those), so a single channel can fill the list on its own.

    Raises:
        ChannelError: no channel named, or a name that is not a channel; the message lists the valid ones.
    """
    if channels is None:
        return dict(quotas)
    unknown = sorted(set(channels) - set(quotas))
    if unknown or not channels:
        named = f"unknown recall channel(s) {unknown}" if unknown else "no recall channel named"
        raise ChannelError(f"{named}: `channels` takes one or more of {list(quotas)}")
    named = {name: quota for name, quota in quotas.items() if name in channels}
    total = max(sum(named.values()), 1)
    return {name: max(quota, math.ceil(candidates * max(quota, 1) / total)) for name, quota in named.items()}


class Recommender:
    """Recall, then the ranker core's ranking, for one user per request; refreshed near-line."""

    def __init__(self, folder: Path, core, features=None, nearline=None, tower=None, refresh_s: float = 60.0) -> None:
        from pipelines.retrieval.recall import Recall

        self.two = load_packed_two_tower(folder)
        self.recall = Recall.load(folder / "recall")
        histories = pd.read_parquet(folder / "histories.parquet")
        self.histories = {int(u): [int(i) for i in h] for u, h in zip(histories["user_id"], histories["history"],
                                                                         strict=True)}  # fmt: skip
        self.indexed = set(np.load(folder / "indexed_items.npy").tolist())  # what the channels hold (or held)
        self.core, self.features, self.nearline, self.tower = core, features, nearline, tower
        self.refresh_s, self._refreshed = refresh_s, -np.inf
        self._cursor = 0  # the near-line engagement log read so far (this worker's own)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, root: Path, core, features=None, nearline=None, tower=None) -> Recommender | None:
        """The recommender packed under ``root`` (the bento model's folder), or None when none was packed."""
        folder = root / RETRIEVAL_DIR
        return cls(folder, core, features, nearline, tower) if (folder / "recall").is_dir() else None

    def refresh(self, now: dt.datetime) -> int:
        """Publish into every channel the near-line state's items the indexes lack, fold the engagements logged
        since the last refresh into the look-alike vectors (:meth:`engage`); expire the old. Returns how many items
        were added."""
        if self.nearline is None or self.features is None:
            return 0
        tracked = self.nearline.snapshot()
        ids = [int(i) for i in tracked["item_id"] if int(i) not in self.indexed]
        added = 0
        if ids:
            items = self.features.items(ids).dropna(subset=["content_vector", "publish_time"])
            items = items[pd.to_datetime(items["publish_time"], utc=True) <= pd.Timestamp(now)]
            if len(items):
                added = publish_items(self.recall, items, self.two, self.tower, now)
                self.indexed.update(int(i) for i in items["item_id"])
        self.engage()
        self.recall.expire(now)
        return added

    def engage(self) -> int:
        """Look-alike, near-line: each engagement the near-line writer logged since this worker last read (every
        click on a new item) moves the item's look-alike vector towards the engaging user's two-tower vector
        (online profile, clicks as of the build). Returns how many engagements were applied (items the look-alike
        channel does not hold, too old or never published, are skipped)."""
        rows, self._cursor = self.nearline.engagements(self._cursor)
        if not len(rows["item_id"]):
            return 0
        users = np.unique(rows["user_id"])
        frame, _ = self.features.users(users.tolist())
        frame["user_id"] = users
        vectors = self.two.embed_users(frame, [self.histories.get(int(u), []) for u in users.tolist()])
        return self.recall.engage(rows["item_id"], vectors[np.searchsorted(users, rows["user_id"])])

    def recommend(self, user_id: int, k: int = 20, now: dt.datetime | None = None, user_features: dict | None = None,
                  candidates: int = 200, channels: list[str] | None = None) -> dict:  # fmt: skip
        """Top ``k`` for ``user_id``: recall ``candidates`` (seen items left out), rank them with the served
        policies; each item lists the ``channels`` that recalled it. ``now`` (default: the wall clock) is the
        platform's time: channels are windows of item age, so a simulated catalog is asked as of its own time.
        ``channels`` limits recall to those channels (:func:`channel_quotas`; :class:`ChannelError` if unknown)."""
        from pipelines.retrieval.recall import Recall

        now = now or dt.datetime.now(dt.UTC)
        quotas = channel_quotas(self.recall.cfg.quotas, channels, candidates)
        with self._lock:
            if time.monotonic() - self._refreshed >= self.refresh_s:
                self.refresh(now)
                self._refreshed = time.monotonic()
            history = self.histories.get(int(user_id), [])
            row = dict(self.features.user(int(user_id))[0]) if self.features is not None else {}
            frame = pd.DataFrame([{**row, **(user_features or {}), "user_id": int(user_id)}])
            vector = self.two.embed_users(frame, [history])[0]
            recall = self.recall
            if channels is not None:  # the same indexes, asked through other quotas
                recall = Recall(recall.cfg.model_copy(update={"quotas": quotas}), recall.pools, recall.inverted,
                                recall.clusters, recall.lookalike)  # fmt: skip
            merged = recall.recall(vector, history, now, candidates, seen=history)
        if not len(merged.ids):
            return {"user_id": int(user_id), "new_user": not history, "items": [], "recalled": 0}
        ranked = self.core.rank(int(user_id), merged.ids.tolist(), user_features, None, now, k)
        channels_of = dict(zip(merged.ids.tolist(), merged.channels, strict=True))
        for item in ranked["items"]:
            item["channels"] = list(channels_of[int(item["item_id"])])
        taken = pd.Series(merged.taken_by, dtype=object).value_counts().to_dict()  # channel -> candidates it gave
        return ranked | {"recalled": len(merged.ids), "recalled_by": taken, "retrieval_version": self.two.version}
