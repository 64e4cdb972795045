"""The platform's retrieval in the closed loop: the recall channels ``/recommend`` serves, filling the simulated feed.

With ``ClosedLoopConfig.retrieval = "platform"`` the simulator's candidates are not used: each hour's requests
get their candidates from :class:`~pipelines.retrieval.recall.Recall` (the two-tower age pools, category and
keyword, content clusters, look-alike; merged with quotas, seen items left out), the same classes and the same
model the ranker bento's ``/recommend`` packs (:mod:`pipelines.serving.recommend`). The feed then ranks them as
it ranks any candidates.

What it learns, it learns as a platform does, near-line:

* **publish events** (:meth:`PlatformRecall.published`): an item enters every channel at the first hour that
  starts after its publish time (the simulator shows an item from the hour after it is published), embedded by
  the two-tower from the content its author filed; a new item joins its nearest content cluster.
* **logged impressions** (:meth:`PlatformRecall.logged`): each user's clicks become their history (newest
  first, as the two-tower's user tower reads it), every shown item joins the user's already-seen set, and clicks
  on look-alike items move those items' vectors towards the clicking users' vectors.
* **the clock**: each hour the channels drop what is past their windows.

The staging (:func:`stage_retrieval`) trains the two-tower model on the pre-period through the catalog's train
hook, which gates it against popularity's recall: a blocked model stops the experiment, as a blocked ranker does.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import OrderedDict
from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.data.schemas import RECALL_CHANNELS
from pipelines.data.sim_feed import Requests, Slates
from pipelines.settings import Settings

log = logging.getLogger(__name__)

US = 1_000_000
HOUR_US = 3600 * US
SEEN_MAX = 500  # shown items remembered per user for the already-seen filter [our choice: a few days of feeds]


class PlatformRecall:
    """The recall channels over the experiment's catalog, kept up to date from the events the feed is handed."""

    def __init__(self, recall, two, histories: dict[int, list[int]], k: int, tower=None) -> None:
        """
        Args:
            recall: a built :class:`~pipelines.retrieval.recall.Recall`.
            two: the served two-tower (``embed_items``, ``embed_users``, ``version``).
            histories: user -> clicked item ids, newest first (the pre-period's clicks).
            k: candidates per request.
            tower: the content tower new items' cluster vectors come from (None: raw content vectors).
        """
        from pipelines.serving.recommend import HISTORY_LEN

        unknown = sorted(set(recall.cfg.quotas) - set(RECALL_CHANNELS))
        if unknown:
            raise ValueError(f"recall channels {unknown} are not in the log contract's {RECALL_CHANNELS}")
        self.recall, self.two, self.k, self.tower = recall, two, k, tower
        self.history_len = HISTORY_LEN
        self.histories = {u: list(h[: self.history_len]) for u, h in histories.items()}
        self.seen: dict[int, OrderedDict] = {}
        self.channel_index = {name: RECALL_CHANNELS.index(name) for name in recall.cfg.quotas}
        self._pending: pd.DataFrame | None = None  # published items not yet in the channels
        self._vectors: dict[int, np.ndarray] = {}  # the last hour's requesting users' vectors (for look-alike)
        self.counts = {"requests": 0, "published": 0, "engaged": 0, "short": 0}

    # ---- what the platform learns -------------------------------------------------------------------------
    def published(self, publishes: pa.Table) -> None:
        """A publish batch (the ``items`` contract table): held until each item's publish time has passed."""
        frame = publishes.select(["item_id", "publish_time", "category", "keywords", "content_vector"]).to_pandas()
        frame["publish_time"] = pd.to_datetime(frame["publish_time"], utc=True)
        self._pending = frame if self._pending is None else pd.concat([self._pending, frame], ignore_index=True)

    def logged(self, impressions: pa.Table) -> None:
        """An hour's logged impressions: clicks extend histories and feed look-alike; shown items become seen."""
        frame = impressions.select(["user_id", "item_id", "event_time", "click"]).to_pandas()
        frame = frame.sort_values("event_time", kind="stable")
        for user, item in zip(frame["user_id"].tolist(), frame["item_id"].tolist(), strict=True):
            seen = self.seen.setdefault(int(user), OrderedDict())
            seen[int(item)] = None
            seen.move_to_end(int(item))
            if len(seen) > SEEN_MAX:
                seen.popitem(last=False)
        clicks = frame[frame["click"].astype(bool)]
        for user, item in zip(clicks["user_id"].tolist(), clicks["item_id"].tolist(), strict=True):
            history = self.histories.setdefault(int(user), [])
            history.insert(0, int(item))
            del history[self.history_len :]
        rows = [(i, self._vectors[u]) for u, i in zip(clicks["user_id"], clicks["item_id"], strict=True)
                if int(u) in self._vectors]  # fmt: skip
        if rows:
            ids = np.asarray([i for i, _ in rows], np.int64)
            self.counts["engaged"] += self.recall.engage(ids, np.stack([v for _, v in rows]))

    def advance(self, now: dt.datetime) -> int:
        """The clock: items published before ``now`` enter every channel; items past a window leave it."""
        added = 0
        if self._pending is not None and len(self._pending):
            due = (self._pending["publish_time"] < pd.Timestamp(now)).to_numpy()
            if due.any():
                from pipelines.serving.recommend import publish_items

                added = publish_items(self.recall, self._pending[due], self.two, self.tower, now)
                self._pending = self._pending[~due].reset_index(drop=True)
        self.recall.expire(now)
        self.counts["published"] += added
        return added

    # ---- recall -------------------------------------------------------------------------------------------
    def candidates(self, requests: Requests, lookup) -> tuple[Slates, np.ndarray]:
        """Each request's ``k`` candidates (rows padded by repeating the list's first item when recall found
        fewer) with the channel that took each, and a mask [n, k] of the real ones. ``lookup``: user ids -> their
        online features, one row each in order (the profile fields the user tower reads)."""
        hour_start = dt.datetime.fromtimestamp(int(requests.time_us.min()) // HOUR_US * 3600, dt.UTC)
        self.advance(hour_start)
        vectors = self.user_vectors(requests.user, lookup)
        n = len(requests.user)
        items = np.zeros((n, self.k), np.int64)
        channel = np.zeros((n, self.k), np.int64)
        valid = np.zeros((n, self.k), bool)
        for r, user in enumerate(requests.user.tolist()):
            now = dt.datetime.fromtimestamp(int(requests.time_us[r]) / US, dt.UTC)
            history = self.histories.get(int(user), [])
            seen = set(self.seen.get(int(user), ())) | set(history)
            merged = self.recall.recall(vectors[r], history, now, self.k, seen)
            m = len(merged.ids)
            if m == 0:
                raise RuntimeError(f"recall found no candidate for user {user} at {now}: the catalog is empty")
            items[r, :m] = merged.ids
            channel[r, :m] = [self.channel_index[name] for name in merged.taken_by]
            valid[r, :m] = True
            items[r, m:], channel[r, m:] = items[r, 0], channel[r, 0]
            self.counts["short"] += int(m < self.k)
        self.counts["requests"] += n
        return Slates(items, channel), valid

    def user_vectors(self, users: np.ndarray, lookup) -> np.ndarray:
        """[n, d] two-tower vectors of the requesting users (online profile and history as of now), remembered
        for the look-alike updates of the hour's clicks."""
        ids, rows = np.unique(users, return_inverse=True)
        profile = lookup(ids)
        vectors = self.two.embed_users(profile, [self.histories.get(int(u), []) for u in ids.tolist()])
        self._vectors = dict(zip(ids.tolist(), vectors, strict=True))
        return vectors[rows]


def stage_retrieval(settings: Settings, dataset: str, first: dt.date, held_out: dt.date, overrides: dict,
                    recall_overrides: dict, k: int, margin: float = 0.0) -> tuple[PlatformRecall, dict]:  # fmt: skip
    """Train and gate the two-tower on [``first``, ``held_out``] (its last day held out) through the catalog's
    train hook, its recall ``margin`` over popularity's given, then index every item published by the end of
    ``held_out``.

    Raises:
        RuntimeError: the gate blocked the two-tower (it did not beat popularity's recall on the held-out day).
    """
    from pipelines.catalog import model as catalog_model
    from pipelines.retrieval.recall import Recall, RecallConfig
    from pipelines.serving.content_vectors import load_tower
    from pipelines.serving.recommend import catalog_items, content_vectors, recent_histories
    from pipelines.training.config import TrainRequest
    from pipelines.training.two_tower import load_two_tower

    entry = catalog_model("two_tower")
    options = {**entry.options, "recall_margin": margin}
    family = replace(entry.family, models={**entry.family.models, entry.name: options})
    entry = replace(entry, family=family)
    request = TrainRequest(dataset=dataset, start=first, end=held_out, overrides=dict(overrides))
    trained = entry.call("train", settings, entry, request)
    if not trained["gate"]["passed"]:
        raise RuntimeError(f"the gate blocked two_tower v{trained['version']}: {trained['gate']['reason']}")
    two = load_two_tower(settings, "champion")
    tower = load_tower(settings)
    items = catalog_items(settings.home, dataset, held_out)
    now = pd.Timestamp(held_out + dt.timedelta(days=1), tz="UTC")
    items = items[items["publish_time"] < now].reset_index(drop=True)
    recall = Recall.build(items, two.embed_items(items), content_vectors(items, tower), now,
                          RecallConfig.model_validate(recall_overrides))  # fmt: skip
    histories = recent_histories(settings, dataset, until=held_out)
    history = {int(u): [int(i) for i in h] for u, h in zip(histories["user_id"], histories["history"], strict=True)}
    platform = PlatformRecall(recall, two, history, k, tower)
    staged = {"version": two.version, "gate": trained["gate"]["reason"], "indexed": len(items)}
    return platform, staged


def channel_ctr(store, start: dt.date, end: dt.date, new_hours: float) -> dict:
    """Impressions and CTR per logged recall channel over [``start``, ``end``], for every item and for new items
    (younger than ``new_hours`` when shown), beside the period's overall CTR; read from the clean log."""
    imps = store.read_range("impressions", start, end, "clean",
                            columns=["item_id", "event_time", "recall_channel", "click"]).to_pandas()  # fmt: skip
    items = store.read_range("items", None, end, "clean", columns=["item_id", "publish_time"]).to_pandas()
    imps = imps.merge(items.drop_duplicates("item_id"), on="item_id", how="left")
    age = (imps["event_time"] - imps["publish_time"]).dt.total_seconds() / 3600
    imps["new"] = (age < new_hours).fillna(False)

    def table(rows: pd.DataFrame) -> dict:
        grouped = rows.groupby("recall_channel", observed=True)["click"].agg(["size", "mean"])
        return {str(c): {"impressions": int(n), "ctr": float(m)} for c, (n, m) in grouped.iterrows()}

    return {"overall_ctr": float(imps["click"].mean()) if len(imps) else None,
            "new_item_ctr": float(imps.loc[imps["new"], "click"].mean()) if imps["new"].any() else None,
            "all_items": table(imps), "new_items": table(imps[imps["new"]])}  # fmt: skip
