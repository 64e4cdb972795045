"""The platform feed: what the staged ranker, through the ranker bento's own code, shows each simulated request.

The simulator keeps the world (users, items, responses, publishing); this feed decides what is shown. Per
simulated hour it takes each request's candidates from the platform's own retrieval when it has one
(:class:`~pipelines.experiments.platform_recall.PlatformRecall`: the recall channels ``/recommend`` serves), else
the candidates the simulator's recall channels drew, scores every (request, candidate) pair in one batch with the staged
model's encoder and network (the objects :class:`~pipelines.serving.ranker.RankerCore` serves), with features from
Feast's online store (users in one lookup per hour, items through :class:`~pipelines.serving.features.FeastFeatures`'
cache), fuses the task scores and applies the serving policies of the request's experiment arm
(:func:`~pipelines.serving.policies.apply_policies`: fixed boost, guaranteed exposure), then keeps the top
``slate_size``.

What the platform learns it learns as a platform would, through the near-line path the ranker bento reads
(:mod:`pipelines.serving.nearline`): publish events give each item's author and publish time (the age the
policies read), each hour's logged impressions are the exposures (and clicks) the guaranteed-exposure controller
counts, and at each hour's end the near-line writer's tick re-estimates quality, targets and gains, with author
scores from Feast's author features. Serving reads that state once per hour (exposures change only when the
hour's impressions are logged, so the cached read is exact) and applies the same control law as
:class:`~pipelines.serving.nearline.SharedExposureController`. It reads no hidden truth; the arm of a unit is the
platform's own assignment.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.data.sim_feed import Requests, Slates
from pipelines.serving.nearline import snapshot_boost
from pipelines.serving.policies import PolicyConfig, apply_policies, fuse

CHUNK = 65_536  # rows per forward pass
US = 1_000_000


class HourlyController:
    """A :class:`~pipelines.serving.nearline.SharedExposureController` that reads the near-line state once per
    simulated hour (:meth:`refresh`) instead of once per request; the boost is the same law on the same state."""

    def __init__(self, nearline, cfg) -> None:
        self.nearline, self.cfg = nearline, cfg
        self._index: dict[int, int] = {}
        self._snap: dict[str, np.ndarray] = {}

    def refresh(self, item_ids: np.ndarray) -> None:
        """Read the state of ``item_ids`` (the hour's candidates)."""
        ids = np.unique(item_ids)
        self._snap = self.nearline.snapshot(ids)
        self._index = {int(i): j for j, i in enumerate(ids.tolist())}

    def boost(self, item_ids, now) -> np.ndarray:
        rows = np.fromiter((self._index.get(int(i), -1) for i in item_ids), np.int64, len(item_ids))
        if (rows < 0).any():
            raise KeyError("boost asked for an item outside the refreshed hour")
        return snapshot_boost({k: v[rows] for k, v in self._snap.items()}, now, self.cfg)


class PlatformFeed:
    """Orders each request's candidates with the staged ranker and the policies of the request's arm."""

    def __init__(
        self,
        core,
        features,
        arms: dict[int, PolicyConfig],
        slot_arm: Callable[[Requests, Slates], np.ndarray],
        slate_size: int,
        nearline=None,
        author_scores=None,
        balanced_new_item_hours: float | None = None,
        on_publish: Callable[[pd.DataFrame], int] | None = None,
        content_quality=None,
        recall=None,
    ) -> None:
        """
        Args:
            core: a :class:`~pipelines.serving.ranker.RankerCore` of the staged version.
            features: a :class:`~pipelines.serving.features.FeastFeatures` on the profile's online store.
            arms: experiment bucket (0 control, 1 treatment) -> the policies that bucket is served with.
            slot_arm: (requests, candidates) -> [n_requests, n_candidates] bucket of each candidate slot (a user
                split: the request's user's bucket; an author split: the item's author's bucket).
            slate_size: items shown per request.
            nearline: the experiment's :class:`~pipelines.serving.nearline.NearlineState`: every published item
                and every logged impression, whatever the arm, so each new item has a target by the state's rule
                (what the arms whose policies enable guaranteed exposure pace to, and what reach is judged by).
            author_scores: what the near-line tick scores authors with
                (:func:`~pipelines.serving.nearline_ingest.feast_author_scores`); None: the default score.
            balanced_new_item_hours: a balanced author split (``slot_arm`` gives the item's author group; a
                bucket without policies of its own, the holdout, is served as control): each request's slate is
                first chosen by control's policies for every candidate (the neutral slate); each slot a new item
                (younger than this many hours) of a group takes there stays that group's, filled with the group's
                own new candidates in the order of its arm's policies. So each group's new items get the slots
                and positions they would get without the experiment, and a treatment only changes which of its
                own new items fill them. None: each slot is ranked by its arm's policies (no shares held).
            on_publish: called with each publish batch's items (``item_id``, ``publish_time`` and the content)
                as they are published, e.g. to write their content-tower rows online
                (:func:`~pipelines.features.content_tower.publish_tower_rows`).
            content_quality: what the near-line tick reads each new item's predicted content quality from
                (:func:`~pipelines.serving.nearline_ingest.feast_content_quality`); None: no content prior.
            recall: the platform's retrieval (:class:`~pipelines.experiments.platform_recall.PlatformRecall`),
                handed the publish events and logged impressions too; it replaces the simulator's candidates
                (their channels are logged as the platform's). None: rank the simulator's candidates.
        """
        self.core, self.features, self.arms, self.slot_arm = core, features, arms, slot_arm
        self.slate_size = slate_size
        self.nearline = nearline
        paced = [arm for arm, cfg in arms.items() if cfg.exposure.enabled]
        if paced and nearline is None:
            raise ValueError(f"arms {paced} enable guaranteed exposure but there is no near-line state")
        self.controllers = {arm: HourlyController(nearline, arms[arm].exposure) for arm in paced}
        self.balanced_new_item_hours = balanced_new_item_hours
        self.author_scores = author_scores
        self.on_publish, self.content_quality = on_publish, content_quality
        self.recall = recall
        self.targets: dict[int, tuple[float, float]] = {}  # item -> (target, exposures) as the state last had them
        self._published = np.full(0, np.nan)  # item id -> publish time, POSIX seconds (NaN: unknown)
        self._pending: pa.Table | None = None  # published items not yet handed to the near-line writer

    # ---- what the platform learns ------------------------------------------------------------------------
    def published(self, publishes: pa.Table) -> None:
        """Publish events: each item's publish time, for the age-based policies; its content, for the
        ``on_publish`` hook."""
        items = np.asarray(publishes["item_id"], dtype=np.int64)
        if not len(items):
            return
        if self.on_publish is not None:
            self.on_publish(publishes.to_pandas())
        if self.recall is not None:
            self.recall.published(publishes)
        if items.max() >= len(self._published):
            grown = np.full(max(int(items.max()) + 1, 2 * len(self._published)), np.nan)
            grown[: len(self._published)] = self._published
            self._published = grown
        times = publishes["publish_time"].cast(pa.int64()).to_numpy()
        self._published[items] = times / US
        new = publishes.select(["item_id", "author_id", "publish_time"])
        self._pending = new if self._pending is None else pa.concat_tables([self._pending, new])

    def logged(self, impressions: pa.Table) -> None:
        """The near-line writer's hour: items published by the hour's end enter the state, the hour's logged
        impressions are counted, and the tick at the hour's end re-estimates targets and gains."""
        times = impressions["event_time"].cast(pa.int64()).to_numpy()
        if self.recall is not None and len(times):
            self.recall.logged(impressions)
        if not len(times) or self.nearline is None:
            return
        hour_end = (int(times.max()) // (3600 * US) + 1) * 3600
        pending = self._pending if self._pending is not None else pa.table({"publish_time": pa.array([], pa.int64())})
        pending_times = pending["publish_time"].cast(pa.int64()).to_numpy() / US
        due = pending_times < hour_end
        items = np.asarray(impressions["item_id"], np.int64)
        clicks = np.asarray(impressions["click"], float)
        state = self.nearline
        if due.any():
            published = pending.filter(pa.array(due))
            state.publish(np.asarray(published["item_id"]), published["author_id"].to_pylist(), pending_times[due])
        state.record_impressions(items, times / US, clicks)
        state.tick(hour_end, self.author_scores, self.content_quality)
        snap = state.snapshot()  # the last word on each item before the tick that forgets it
        pairs = zip(snap["target"].tolist(), snap["exposures"].tolist(), strict=True)
        self.targets.update(zip(snap["item_id"].tolist(), pairs, strict=True))
        if due.any():
            self._pending = pending.filter(pa.array(~due))

    # ---- ranking -----------------------------------------------------------------------------------------
    def order(self, requests: Requests, candidates: Slates) -> Slates:
        """Score the hour's candidates in one batch, apply each slot's arm's policies, keep the top slate."""
        valid = None
        if self.recall is not None:  # the platform's retrieval, not the simulator's draws
            candidates, valid = self.recall.candidates(requests, self._profiles)
        items = candidates.items
        _, base, unknown = self.score(requests.user, items)
        arm = self.slot_arm(requests, candidates)
        for controller in self.controllers.values():
            controller.refresh(items)
        order = np.empty((len(items), min(self.slate_size, items.shape[1])), np.int64)
        for r in range(len(items)):
            now = requests.time_us[r] / US
            age = (now - self._age_source(items[r])) / 3600.0
            scores = self._policies(base[r], items[r], age, arm[r], now, unknown[r])
            if valid is not None:  # padding never outranks a recalled item
                scores = tuple(None if s is None else np.where(valid[r], s, -np.inf) for s in scores)
            if self.balanced_new_item_hours is None:
                order[r] = np.argsort(-scores[0], kind="stable")[: self.slate_size]
            else:
                order[r] = self._balanced(scores, age, arm[r])
        return Slates(np.take_along_axis(items, order, axis=1), np.take_along_axis(candidates.channel, order, axis=1))

    def _age_source(self, items: np.ndarray) -> np.ndarray:
        known = items < len(self._published)
        out = np.full(len(items), np.nan)
        out[known] = self._published[items[known]]
        return out

    def _policies(self, base, items, age, arm, now, unknown) -> tuple[np.ndarray, np.ndarray | None]:
        """One request's scores after each slot's arm's policies (an author split mixes arms within a request),
        and in a balanced split the neutral scores (control's policies on every candidate)."""
        out = np.empty(len(items))
        neutral = None
        ids = items.tolist()
        buckets = np.unique(arm)
        if self.balanced_new_item_hours is not None:
            buckets = np.union1d(buckets, [0])
        for bucket in buckets:
            served = int(bucket) if int(bucket) in self.arms else 0  # the holdout is served as control
            scores, _ = apply_policies(base, ids, age, self.controllers.get(served), now, self.arms[served],
                                       out_of_vocab=unknown)  # fmt: skip
            mask = arm == bucket
            out[mask] = scores[mask]
            if bucket == 0:
                neutral = scores
        return out, neutral

    def _balanced(self, scores: tuple[np.ndarray, np.ndarray], age: np.ndarray, group: np.ndarray) -> np.ndarray:
        """A balanced split's slate (candidate indices, best first): the neutral slate, with each treated group's
        new-item slots refilled by its own new candidates in its arm's order."""
        final, neutral = scores
        slate = np.argsort(-neutral, kind="stable")[: self.slate_size]
        new = np.nan_to_num(age, nan=np.inf) < self.balanced_new_item_hours
        for g in self.arms:
            if g == 0:
                continue  # control's own order is the neutral one
            slots = np.flatnonzero(new[slate] & (group[slate] == g))
            if len(slots):
                pool = np.flatnonzero(new & (group == g))
                slate[slots] = pool[np.argsort(-final[pool], kind="stable")[: len(slots)]]
        return slate

    def score(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """pCTR, fused score and out-of-vocabulary flag of every (request, candidate) pair, each [n, k], through
        :meth:`~pipelines.serving.ranker.RankerCore.score_frame` (the path ``/rank`` and evaluation score with)."""
        scored = self.core.score_frame(self.frame(users, items), chunk=CHUNK)
        p_ctr, p_cvr, p_ctcvr = (scored[k].to_numpy() for k in ("p_ctr", "p_cvr", "p_ctcvr"))
        base = fuse(p_ctr, p_cvr, p_ctcvr, self.arms[0])
        shape = items.shape
        return p_ctr.reshape(shape), base.reshape(shape), scored["item_oov"].to_numpy().reshape(shape)

    def frame(self, users: np.ndarray, items: np.ndarray) -> pd.DataFrame:
        """The scoring frame: one row per (request, candidate), user features repeated over the candidates."""
        n, k = items.shape
        user_ids, user_row = np.unique(users, return_inverse=True)
        user_frame = self.user_features(user_ids)
        item_ids, item_row = np.unique(items.ravel(), return_inverse=True)
        item_frame = self.features.items(item_ids.tolist())
        user_index = np.repeat(user_row, k)
        columns = {c: item_frame[c].to_numpy()[item_row] for c in item_frame.columns if c not in user_frame}
        columns |= {c: user_frame[c].to_numpy()[user_index] for c in user_frame.columns}
        return pd.DataFrame(columns)

    def _profiles(self, user_ids: np.ndarray) -> pd.DataFrame:
        """The online features of ``user_ids`` (one lookup), for the two-tower's user tower."""
        frame, _ = self.features.users(user_ids.tolist())
        frame["user_id"] = user_ids.astype(np.int64)
        return frame

    def user_features(self, user_ids: np.ndarray) -> pd.DataFrame:
        """One row per user, in order, from one online lookup; unknown users get ``is_new_user`` = 1 (the
        ranker's new-user path, as :meth:`RankerCore.rank` takes it)."""
        frame, known = self.features.users(user_ids.tolist())
        frame["user_id"] = user_ids.astype(np.int64)
        known = np.asarray(known, bool)
        if "is_new_user" in frame:
            frame["is_new_user"] = np.where(known, frame["is_new_user"].astype(object), 1)
        else:
            frame["is_new_user"] = np.where(known, None, 1)
        return frame
