"""Near-line state of the guaranteed-exposure controller: fed from logged impressions, shared by every serving
worker, kept across restarts.

Per new item (it enters when published and is forgotten ``window_hours`` later) the state holds its author and
publish time, the exposures and clicks counted from *logged impressions* inside its window, and what the last
tick made of them: quality score, author score, target, log gain, clipped deficit, tick time.

Who does what (the control law itself is :mod:`pipelines.serving.exposure`'s, written once):

* The near-line writer, one process that ingests the logs (:func:`pipelines.serving.nearline_ingest.ingest_day`
  hour by hour, or a stream consumer): :meth:`NearlineState.publish` as items are published,
  :meth:`NearlineState.record_impressions` as impressions are logged (atomic increments, any time; clicks also
  go to an engagement log, item, user and time, that serving's look-alike recall reads with
  :meth:`NearlineState.engagements` from a cursor of its own), and
  :meth:`NearlineState.tick` at each hour end, which (a) re-estimates every active item's quality and recomputes
  its target, (b) integrates the gain (the I term) with the deficit at the tick, (c) forgets expired items.
* Serving (:class:`SharedExposureController`) only reads: ``boost = min(cap, g · (1 + kp · d))`` with ``g`` the
  gain as last ticked and ``d`` the deficit at request time from the exposures counted so far. A service's own
  answers are not exposures; only what the logs say was shown counts.

Quality estimate, the rule by which content and then evidence move a new item's target (``ExposureConfig``
fields in brackets): at each tick, over the active new items, the Beta-binomial posterior mean CTR
``ctr_i = (clicks_i + m · p_i) / (exposures_i + m)`` with ``m`` the prior strength [``quality_prior_strength``,
100] and the item's own prior ``p_i = p · exp(c · (q_i - q̄))``: ``p = Σ clicks / Σ exposures`` the pooled CTR
of the active new items (empirical Bayes), ``q_i`` the content tower's predicted content quality (Feast's
``item_content_tower_fv.content_quality``, written when the item is published; see
:func:`pipelines.serving.nearline_ingest.feast_content_quality`) and ``c`` [``content_quality_weight``, 1]
(:func:`~pipelines.serving.exposure.posterior_ctr`). The quality score is ``ctr_i``'s mid-rank percentile among
them. An item with no exposures sits at its content's prior (no tower, or no prediction for it: the pooled CTR,
in the middle; all without evidence or content: 0.5 each, which is also the score an item gets when
published); as clicks and exposures arrive it moves towards its own CTR and its target follows, until the item
is ``ramp_hours`` old: from then on
its quality and author scores, hence its target, stay as last estimated, so the rest of the window goes to
meeting a target that no longer moves (re-estimating to the end missed more targets in the simulated day of
``tests/model/test_serving_policies.py``: 93% reached against 98%).

Author score: the percentile of the author's smoothed CTR (Feast's ``author_stats_fv.author_ctr_smoothed``)
among the authors of the active new items that have one (:func:`~pipelines.serving.exposure.author_percentiles`);
an author with no history gets [``author_default_score``, 0.5]. ``target = exposure_target(quality, author)``.

Backends (:mod:`pipelines.serving.nearline_backends`), chosen by ``settings.profile``: local, a SQLite file
``<home>/nearline/<dataset>.db`` in WAL mode; prod, Redis at ``settings.redis_url`` under the key prefix
``<feast_project>:nearline:{<dataset>}``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np

from pipelines.serving.exposure import (
    HOUR,
    ExposureConfig,
    exposure_target,
    integrate_gain,
    midrank_percentile,
    paced_boost,
    posterior_ctr,
    schedule_deficit,
    to_seconds,
)
from pipelines.serving.nearline_backends import COLUMNS, Backend, RedisBackend, SqliteBackend
from pipelines.settings import Settings

AuthorScores = Mapping[int, float] | Callable[[list[int]], Mapping[int, float]]
ContentQuality = Mapping[int, float] | Callable[[list[int]], Mapping[int, float]]
WATERMARK = "ingested_through"


def sqlite_path(settings: Settings, dataset: str = "sim") -> Path:
    """The local profile's state file: ``<home>/nearline/<dataset>.db``."""
    return settings.home / "nearline" / f"{dataset}.db"


def redis_prefix(settings: Settings, dataset: str = "sim") -> str:
    """The prod profile's key prefix; ``{dataset}`` is the cluster hash tag."""
    return f"{settings.feast_project}:nearline:{{{dataset}}}"


class NearlineState:
    """The shared per-item state and its writer's operations; ids are integers (the contract's ``item_id``)."""

    def __init__(self, backend: Backend, cfg: ExposureConfig | None = None) -> None:
        """Args: backend: where the state lives; cfg: the controller's knobs (window, targets, quality rule, I term)."""
        self.backend = backend
        self.cfg = cfg or ExposureConfig()

    @classmethod
    def open(cls, settings: Settings, dataset: str = "sim", cfg: ExposureConfig | None = None) -> NearlineState:
        """The profile's store: SQLite under ``settings.home`` (local) or Redis (prod)."""
        if settings.profile == "prod":
            return cls(RedisBackend(settings.redis_url, redis_prefix(settings, dataset)), cfg)
        return cls(SqliteBackend(sqlite_path(settings, dataset)), cfg)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> NearlineState:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def publish(self, item_ids: Sequence[int], author_ids: Sequence[float | None], published_s: np.ndarray) -> int:
        """Start tracking items at their publication; ids already known keep their state. Returns how many were new.

        A new item starts with no exposures, quality score 0.5, the default author score and the target they give,
        so serving can pace it before the next tick re-scores it.

        Args:
            item_ids: [n] ids (repeats: the first row counts).
            author_ids: [n] author ids (None or NaN: no author).
            published_s: [n] (or one) POSIX seconds of publication.
        """
        ids, first = np.unique(np.asarray(item_ids, np.int64), return_index=True)
        if not len(ids):
            return 0
        n = len(np.asarray(item_ids))
        authors = np.array([np.nan if a is None else a for a in author_ids], float)[first]
        published = (np.asarray(published_s, float) * np.ones(n))[first]
        quality, author = np.full(len(ids), 0.5), np.full(len(ids), self.cfg.author_default_score)
        zeros = np.zeros(len(ids))
        return self.backend.insert(ids, {
            "author_id": authors, "published": published, "exposures": zeros, "clicks": zeros, "quality": quality,
            "author_score": author, "target": exposure_target(quality, author, self.cfg), "log_gain": zeros,
            "error": zeros, "updated": published,
        })  # fmt: skip

    def record_impressions(self, item_ids: Sequence[int], times_s: np.ndarray, clicks: np.ndarray,
                           user_ids: Sequence[int] | None = None) -> int:  # fmt: skip
        """Add logged impressions (one row each) to the exposures and clicks of known items; with ``user_ids``,
        each counted click is also logged as an engagement (item, user, time), what serving's look-alike reads.

        Only impressions within ``window_hours`` of the item's publication count; unknown ids are ignored.
        Returns the number of impressions counted.
        """
        ids = np.asarray(item_ids, np.int64)
        if not len(ids):
            return 0
        uniq, inverse = np.unique(ids, return_inverse=True)
        published = self.snapshot(uniq)["published"][inverse]
        inside = ((np.asarray(times_s, float) - published) / HOUR < self.cfg.window_hours).astype(float)  # NaN: no
        exposures = np.bincount(inverse, weights=inside, minlength=len(uniq))
        clicked = np.bincount(inverse, weights=inside * np.asarray(clicks, float), minlength=len(uniq))
        seen = exposures > 0
        if seen.any():
            self.backend.add(uniq[seen], exposures[seen], clicked[seen])
        engaged = (inside * np.asarray(clicks, float)) > 0
        if user_ids is not None and engaged.any():
            users = np.asarray(user_ids, np.int64)
            self.backend.add_engagements(ids[engaged], users[engaged], np.asarray(times_s, float)[engaged])
        return int(exposures.sum())

    def engagements(self, after: int = 0) -> tuple[dict[str, np.ndarray], int]:
        """The engagements logged after cursor ``after`` (``item_id``, ``user_id``, ``time`` in POSIX seconds, in
        the order they were logged) and the cursor to ask from next time; each reader keeps its own."""
        seq, items, users, times = self.backend.engagements(after)
        return {"item_id": items, "user_id": users, "time": times}, int(seq[-1]) if len(seq) else int(after)

    def tick(
        self,
        now: float | dt.datetime,
        author_scores: AuthorScores | None = None,
        content_quality: ContentQuality | None = None,
    ) -> int:
        """The near-line controller step at ``now``; run by the single writer. Returns the active items' count.

        Args:
            now: the step's time (POSIX seconds or a datetime), normally an hour end.
            author_scores: author id -> score in [0, 1], or a callable given the active items' author ids that
                returns one (see :func:`pipelines.serving.nearline_ingest.feast_author_scores`). Authors missing
                from it get ``author_default_score``. None: every item keeps its last author score.
            content_quality: item id -> the content tower's predicted quality, or a callable given the active
                items' ids that returns one (:func:`pipelines.serving.nearline_ingest.feast_content_quality`);
                items missing from it, or None, start from the pooled CTR.
        """
        now, cfg = to_seconds(now), self.cfg
        ids, cols = self.backend.read(None)
        age = (now - cols["published"]) / HOUR
        expired = age >= cfg.window_hours
        if expired.any():
            self.backend.delete(ids[expired])
        self.backend.trim_engagements(now - cfg.window_hours * HOUR)  # an item's engagements leave with it
        ids, age, cols = ids[~expired], age[~expired], {k: v[~expired] for k, v in cols.items()}
        if not len(ids):
            return 0
        predicted = self._content_quality(ids, content_quality)
        quality = midrank_percentile(posterior_ctr(cols["clicks"], cols["exposures"], cfg, predicted))
        author = self._author_scores(cols["author_id"], cols["author_score"], author_scores)
        settled = age >= cfg.ramp_hours  # past the ramp the target stays put: the rest of the window is for meeting it
        quality, author = np.where(settled, cols["quality"], quality), np.where(settled, cols["author_score"], author)
        target = exposure_target(quality, author, cfg)
        deficit = schedule_deficit(target, cols["exposures"], age, cfg)
        log_gain, error = integrate_gain(cols["log_gain"], cols["error"], deficit, (now - cols["updated"]) / HOUR, cfg)
        self.backend.update(ids, {"quality": quality, "author_score": author, "target": target, "log_gain": log_gain,
                                  "error": error, "updated": np.maximum(cols["updated"], now)})  # fmt: skip
        return len(ids)

    @staticmethod
    def _content_quality(item_ids: np.ndarray, quality: ContentQuality | None) -> np.ndarray | None:
        if quality is None:
            return None
        if callable(quality):
            quality = quality(item_ids.tolist())
        values = [quality.get(int(i)) for i in item_ids.tolist()]
        return np.array([np.nan if v is None else v for v in values], float)

    def _author_scores(self, author_ids: np.ndarray, last: np.ndarray, scores: AuthorScores | None) -> np.ndarray:
        default = self.cfg.author_default_score
        if scores is None:
            return np.where(np.isnan(last), default, last)
        known = np.isfinite(author_ids)
        if callable(scores):
            scores = scores(sorted({int(a) for a in author_ids[known]}))
        return np.array([scores.get(int(a), default) if ok else default
                         for a, ok in zip(author_ids.tolist(), known.tolist(), strict=True)], float)  # fmt: skip

    def snapshot(self, item_ids: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """The state of the given ids (NaN for unknown ones), or of every tracked item (with ``item_id``).

        Keys: ``author_id``, ``published``, ``exposures``, ``clicks``, ``quality``, ``author_score``, ``target``,
        ``log_gain``, ``error`` (clipped deficit at the last tick), ``updated`` (last tick).
        """
        if item_ids is None:
            found, cols = self.backend.read(None)
            return {"item_id": found, **cols}
        ids = np.asarray(item_ids, np.int64)
        found, cols = self.backend.read(np.unique(ids))
        position = {item: j for j, item in enumerate(found.tolist())}
        index = np.fromiter((position.get(i, -1) for i in ids.tolist()), np.int64, len(ids))
        known = index >= 0
        out = {}
        for name in COLUMNS:
            column = np.full(len(ids), np.nan)
            column[known] = cols[name][index[known]]
            out[name] = column
        return out

    def watermark(self) -> float | None:
        """POSIX seconds up to which the logs have been ingested (None: never)."""
        return self.backend.get_meta(WATERMARK)

    def set_watermark(self, now: float | dt.datetime) -> None:
        """Record that the logs before ``now`` have been ingested (an ingest then skips them on a re-run)."""
        self.backend.set_meta(WATERMARK, to_seconds(now))


def snapshot_boost(snap: Mapping[str, np.ndarray], now: float | dt.datetime, cfg: ExposureConfig) -> np.ndarray:
    """The serving side of the law on a state snapshot: the gain as last ticked times the proportional term on the
    deficit at ``now`` (1 for items the snapshot does not know)."""
    age = (to_seconds(now) - snap["published"]) / HOUR
    deficit = schedule_deficit(snap["target"], snap["exposures"], age, cfg)
    return paced_boost(snap["log_gain"], deficit, age, snap["exposures"], snap["target"], cfg)


class SharedExposureController:
    """The serving side of the near-line controller: boosts from the shared state, never a write.

    Same ``boost`` and ``state`` as :class:`~pipelines.serving.exposure.ExposureController`; items not in the
    state (not published through the near-line writer, or expired) get 1.
    """

    def __init__(self, nearline: NearlineState, cfg=None) -> None:
        """Args: nearline: the shared state; cfg: ``ExposureConfig`` or ``PolicyConfig`` (default: the state's)."""
        cfg = getattr(cfg, "exposure", cfg)
        self.nearline = nearline
        self.cfg: ExposureConfig = cfg if cfg is not None else nearline.cfg

    def boost(self, item_ids: Sequence[Hashable], now: float | dt.datetime) -> np.ndarray:
        """Multipliers [n]: the gain as last ticked times the proportional term on the deficit at ``now``."""
        if not len(item_ids):
            return np.ones(0)
        return snapshot_boost(self.nearline.snapshot(np.asarray(item_ids, np.int64)), now, self.cfg)

    def state(self, item_ids: Sequence[Hashable]) -> dict[str, np.ndarray]:
        """Targets, exposures so far and gains as last ticked of the given ids (NaN for unknown ids)."""
        snap = self.nearline.snapshot(np.asarray(item_ids, np.int64))
        return {"target": snap["target"], "exposures": snap["exposures"], "gain": np.exp(snap["log_gain"])}
