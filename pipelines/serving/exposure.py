"""Guaranteed exposure: each new item gets at least its target exposures in its first ``window_hours``.

* Target, differentiated by expected quality: ``target = min_target + (max_target - min_target) · clip(w·q +
  (1 - w)·a, 0, 1)`` with ``q`` the item's predicted content quality and ``a`` its author's quality, both in
  [0, 1]. They are percentiles so they are comparable across days and models: ``q`` is, near-line, the
  percentile of the item's posterior-mean CTR among the active new items, re-estimated at every tick as clicks
  arrive (the rule: :mod:`pipelines.serving.nearline`), and in-process the percentile of its pCTR among the
  request's candidates when first seen (:func:`~pipelines.serving.policies.apply_policies`); ``a`` the
  percentile of the author's smoothed CTR ``(clicks + m·ctr_global) / (impressions + m)`` (Feast's
  ``author_stats_fv``) among the authors at hand (``author_default_score``, 0.5, for an author with no history).
* Curve: ``T(t) = target · min(1, t / ramp_hours)``, a straight line that reaches the target at ``ramp_hours``,
  before the end of the window, so a controller that lags the line still lands on the target in time.
* Feedback law (per item, a PI controller on a multiplicative boost). With the deficit in schedule hours
  ``d = (T(t) - exposures) / (target / ramp_hours)``: ``boost = min(cap, g · (1 + kp · d))`` while ``d > 0``,
  else 1. The gain ``g`` integrates the deficit, ``log g += ki · clip(d, -1, 1) · Δt_hours`` (trapezoid between
  calls), kept in [0, log cap]. The proportional part reacts at once; the integral part learns the lift an item
  needs to be shown at the curve's pace (a weak item needs more than its deficit alone would give), is applied
  the moment the item falls behind again, and decays back to 1 while the item stays ahead. An item at its
  target, or past its window, gets 1.

The law is written once, as functions (:func:`schedule_deficit`, :func:`integrate_gain`, :func:`paced_boost`),
and run by two controllers:

* :class:`ExposureController`, in-process: state in flat numpy arrays behind one lock; ``boost`` integrates the
  gain at every call and :meth:`~ExposureController.record` counts what the caller says it showed. ``boost`` on
  200 candidates costs one dict lookup per id plus a handful of vectorised operations (about 60 µs). Lost on
  restart and private to one process: for simulations, benchmarks and a single-process service.
* :class:`~pipelines.serving.nearline.SharedExposureController`, read-only over the near-line state
  (:mod:`pipelines.serving.nearline`) that every serving worker shares: the near-line writer counts logged
  impressions, re-estimates quality and integrates the gain at each tick; serving adds the proportional term on
  the deficit at request time.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Hashable, Mapping, Sequence
from itertools import repeat

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

HOUR = 3600.0


class ExposureConfig(BaseModel):
    """Knobs of the guaranteed-exposure controller (times in hours, targets in exposures)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    window_hours: float = Field(24.0, gt=0, description="Exposures are guaranteed within this age.")
    ramp_hours: float = Field(20.0, gt=0, description="The curve T(t) reaches the target at this age.")
    min_target: float = Field(100.0, ge=0)
    max_target: float = Field(500.0, ge=0)
    quality_weight: float = Field(0.7, ge=0, le=1, description="w in w·quality + (1 - w)·author.")
    kp: float = Field(1.0, ge=0, description="Proportional gain: extra boost per schedule hour behind.")
    ki: float = Field(2.0, ge=0, description="Integral rate: log-gain change per hour at one schedule hour off.")
    cap: float = Field(20.0, ge=1, description="Largest multiplier the controller ever applies.")
    quality_prior_strength: float = Field(
        100.0, gt=0, description="m of the near-line quality estimate (clicks + m·prior) / (exposures + m): the "
        "exposures at which an item's own CTR weighs as much as the pooled CTR of the active new items.",
    )  # fmt: skip
    author_default_score: float = Field(
        0.5, ge=0, le=1, description="Author score of an author with no history (no smoothed CTR in Feast)."
    )
    content_quality_weight: float = Field(
        1.0, ge=0, le=2, description="c in each item's own prior p·exp(c·(q_i - mean q)), q the content tower's "
        "predicted quality (log clicks over expected clicks): how far content alone moves an unshown item's "
        "quality score, before its own clicks take over. 0: every item starts from the pooled CTR.",
    )  # fmt: skip

    @model_validator(mode="after")
    def _consistent(self) -> ExposureConfig:
        if self.ramp_hours > self.window_hours:
            raise ValueError("ramp_hours must not exceed window_hours: the curve has to reach the target in time")
        if self.min_target > self.max_target:
            raise ValueError("min_target must not exceed max_target")
        return self


def exposure_target(quality_score: np.ndarray, author_score: np.ndarray, cfg: ExposureConfig) -> np.ndarray:
    """Exposures to guarantee, in [min_target, max_target], increasing in both scores (each in [0, 1])."""
    mix = cfg.quality_weight * np.asarray(quality_score, float) + (1 - cfg.quality_weight) * np.asarray(
        author_score, float
    )
    return cfg.min_target + (cfg.max_target - cfg.min_target) * np.clip(mix, 0.0, 1.0)


def target_curve(target: np.ndarray, age_hours: np.ndarray, cfg: ExposureConfig) -> np.ndarray:
    """T(t) = target · min(1, t / ramp_hours): exposures an item should have at age ``t`` (negative ages: 0)."""
    return np.asarray(target, float) * np.minimum(np.maximum(np.asarray(age_hours, float), 0.0) / cfg.ramp_hours, 1.0)


def schedule_deficit(
    target: np.ndarray, exposures: np.ndarray, age_hours: np.ndarray, cfg: ExposureConfig
) -> np.ndarray:
    """How many schedule hours each item is behind its curve: ``(T(t) - exposures) / (target / ramp_hours)``.

    Negative when ahead. The rate has a floor of one exposure per ``ramp_hours`` so a zero target divides safely.
    """
    target = np.asarray(target, float)
    rate = np.maximum(target, 1.0) / cfg.ramp_hours  # exposures per hour along the curve
    return (target_curve(target, age_hours, cfg) - np.asarray(exposures, float)) / rate


def integrate_gain(
    log_gain: np.ndarray, last_error: np.ndarray, deficit: np.ndarray, dt_hours: np.ndarray, cfg: ExposureConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The integral term: ``log g += ki · (e_last + e) / 2 · Δt`` with ``e = clip(deficit, -1, 1)``.

    Args:
        log_gain: [n] log gain after the last step.
        last_error: [n] clipped deficit at the last step.
        deficit: [n] deficit now (:func:`schedule_deficit`).
        dt_hours: [n] (or one) hours since the last step; negative values count as 0.
        cfg: the controller's knobs.

    Returns:
        The new log gain [n], kept in [0, log cap], and the clipped deficit [n] to remember for the next step.
    """
    error = np.clip(np.asarray(deficit, float), -1.0, 1.0)
    step = cfg.ki * 0.5 * (np.asarray(last_error, float) + error) * np.maximum(dt_hours, 0.0)  # trapezoid
    return np.clip(np.asarray(log_gain, float) + step, 0.0, np.log(cfg.cap)), error


def paced_boost(
    log_gain: np.ndarray,
    deficit: np.ndarray,
    age_hours: np.ndarray,
    exposures: np.ndarray,
    target: np.ndarray,
    cfg: ExposureConfig,
) -> np.ndarray:
    """The multiplier: ``min(cap, g · (1 + kp · d))`` for an item behind, inside its window and short of its
    target; 1 otherwise (NaN inputs, as for unknown items, give 1)."""
    deficit = np.asarray(deficit, float)
    active = (np.asarray(age_hours, float) < cfg.window_hours) & (np.asarray(exposures, float) < target) & (deficit > 0)
    mult = np.exp(log_gain) * (1.0 + cfg.kp * np.maximum(deficit, 0.0))
    return np.where(active, np.clip(mult, 1.0, cfg.cap), 1.0)


def midrank_percentile(values: np.ndarray) -> np.ndarray:
    """Each value's percentile among ``values``, in (0, 1): ``(mid-rank + 0.5) / n``; ties share their mean rank,
    so items with equal evidence get equal scores (all equal: 0.5)."""
    values = np.asarray(values, float)
    if not len(values):
        return values.copy()
    uniq, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])  # rank of each distinct value's first member
    return (first + (counts - 1) / 2 + 0.5)[inverse] / len(values)


def posterior_ctr(
    clicks: np.ndarray, exposures: np.ndarray, cfg: ExposureConfig, content_quality: np.ndarray | None = None
) -> np.ndarray:
    """Beta-binomial posterior mean CTR ``(clicks + m·p_i) / (exposures + m)`` with ``m =
    cfg.quality_prior_strength``.

    The prior ``p_i = p · exp(c · (q_i - q̄))``: ``p`` the pooled CTR of the given items (empirical Bayes; 0 when
    none has been shown), ``q_i`` the content tower's predicted quality (a log ratio of clicks to expected
    clicks, so ``exp`` of its deviation from the mean ``q̄`` of the items that have one scales the pooled CTR),
    ``c = cfg.content_quality_weight``; the exponent is clipped to [-2, 2] (a prior at most e² off the pool).
    Items without a prediction (NaN, or ``content_quality`` None) get ``p``. So an item nobody has seen is
    ranked by its content, and its own clicks outweigh the content once its exposures pass ``m``. Before any of
    the items has been shown ``p`` is unknown and taken as 1: every value is then its prior scale alone, which
    orders the items by content as the percentile needs (not a CTR).
    """
    clicks, exposures = np.asarray(clicks, float), np.asarray(exposures, float)
    prior = clicks.sum() / exposures.sum() if exposures.sum() > 0 else 1.0
    m = cfg.quality_prior_strength
    return (clicks + m * prior * content_prior_scale(content_quality, len(clicks), cfg)) / (exposures + m)


def content_prior_scale(content_quality: np.ndarray | None, n: int, cfg: ExposureConfig) -> np.ndarray:
    """``exp(clip(c · (q_i - q̄), -2, 2))`` per item (1 where ``q_i`` is missing): see :func:`posterior_ctr`."""
    if content_quality is None or cfg.content_quality_weight == 0:
        return np.ones(n)
    q = np.asarray(content_quality, float)
    known = np.isfinite(q)
    if not known.any():
        return np.ones(n)
    deviation = np.where(known, q - q[known].mean(), 0.0)
    return np.exp(np.clip(cfg.content_quality_weight * deviation, -2.0, 2.0))


def author_percentiles(author_ctr: Mapping[int, float | None]) -> dict[int, float]:
    """Author score: each author's percentile of smoothed CTR among the given authors that have one (an author
    with no value is left out: the caller gives it ``cfg.author_default_score``)."""
    known = {a: float(v) for a, v in author_ctr.items() if v is not None and np.isfinite(v)}
    scores = midrank_percentile(np.fromiter(known.values(), float, len(known)))
    return dict(zip(known, scores.tolist(), strict=True))


def to_seconds(now: float | dt.datetime) -> float:
    """POSIX seconds from seconds or a timezone-aware datetime (a naive one is taken as UTC)."""
    if isinstance(now, dt.datetime):
        return (now if now.tzinfo else now.replace(tzinfo=dt.UTC)).timestamp()
    return float(now)


class ExposureController:
    """Per-item state (publish time, target, exposures, gain) and the feedback law that turns it into boosts.

    Item ids are any hashable (str or int, used consistently). Times are POSIX seconds (``time.time()``) or
    datetimes. Items unknown to the controller always get a boost of 1. Items past their window are forgotten
    by :meth:`prune`, which :meth:`record` also runs at most once an hour, so the state stays the size of the
    last ``window_hours`` of new items.
    """

    _COLUMNS = ("_published", "_target", "_exposures", "_log_gain", "_deficit", "_updated")

    def __init__(self, cfg: ExposureConfig | None = None, capacity: int = 1024) -> None:
        """Args: cfg: the controller's knobs (a ``PolicyConfig`` is accepted for its ``exposure`` part)."""
        cfg = getattr(cfg, "exposure", cfg)
        self.cfg: ExposureConfig = cfg if cfg is not None else ExposureConfig()
        self._lock = threading.Lock()
        self._index: dict[Hashable, int] = {}
        self._ids: list[Hashable] = []
        self._pruned_at = -np.inf
        capacity = max(capacity, 1)
        self._published = np.zeros(capacity)
        self._target = np.zeros(capacity)
        self._exposures = np.zeros(capacity)
        self._log_gain = np.zeros(capacity)
        self._deficit = np.zeros(capacity)  # clipped deficit when the gain was last integrated
        self._updated = np.zeros(capacity)  # when that was

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: Hashable) -> bool:
        return item_id in self._index

    def _grow(self, needed: int) -> None:
        size = len(self._published)
        if needed <= size:
            return
        new_size = max(needed, 2 * size)
        for name in self._COLUMNS:
            grown = np.zeros(new_size)
            grown[:size] = getattr(self, name)
            setattr(self, name, grown)

    def _lookup(self, item_ids: Sequence[Hashable]) -> np.ndarray:
        return np.fromiter(map(self._index.get, item_ids, repeat(-1)), dtype=np.int64, count=len(item_ids))

    def register(
        self,
        item_ids: Sequence[Hashable],
        published_at: np.ndarray,
        quality_score: np.ndarray,
        author_score: np.ndarray,
        exposures: np.ndarray | None = None,
    ) -> np.ndarray:
        """Start controlling new items; ids already known keep their state. Returns every given id's target.

        Args:
            item_ids: [n] ids.
            published_at: [n] (or one) POSIX seconds of publication.
            quality_score: [n] predicted content quality in [0, 1] (see the module docstring).
            author_score: [n] author quality in [0, 1].
            exposures: [n] exposures the items already had (e.g. from the item stats after a restart); 0 if
                left out.
        """
        item_ids = list(item_ids)
        n = len(item_ids)
        targets = exposure_target(quality_score, author_score, self.cfg) * np.ones(n)
        published_at = np.asarray(published_at, float) * np.ones(n)
        seen = np.zeros(n) if exposures is None else np.asarray(exposures, float) * np.ones(n)
        with self._lock:
            fresh = []
            for j, item in enumerate(item_ids):
                if item not in self._index:
                    self._index[item] = len(self._ids)
                    self._ids.append(item)
                    fresh.append(j)
            self._grow(len(self._ids))
            rows = np.arange(len(self._ids) - len(fresh), len(self._ids))
            self._published[rows] = published_at[fresh]
            self._target[rows] = targets[fresh]
            self._exposures[rows] = seen[fresh]
            self._log_gain[rows] = 0.0
            self._deficit[rows] = 0.0
            self._updated[rows] = published_at[fresh]
            return self._target[self._lookup(item_ids)]

    def boost(self, item_ids: Sequence[Hashable], now: float | dt.datetime) -> np.ndarray:
        """Multipliers [n] for the candidates' scores: 1 when on track, done, expired or unknown, else > 1."""
        cfg, now = self.cfg, to_seconds(now)
        out = np.ones(len(item_ids))
        with self._lock:
            idx = self._lookup(item_ids)
            known = idx >= 0
            rows = idx[known]
            if not len(rows):
                return out
            age = (now - self._published[rows]) / HOUR  # [k] hours
            target = self._target[rows]
            exposures = self._exposures[rows]
            deficit = schedule_deficit(target, exposures, age, cfg)  # schedule hours behind (< 0: ahead)
            dt_hours = (now - self._updated[rows]) / HOUR
            log_gain, error = integrate_gain(self._log_gain[rows], self._deficit[rows], deficit, dt_hours, cfg)
            self._log_gain[rows] = log_gain
            self._deficit[rows] = error
            self._updated[rows] = np.maximum(self._updated[rows], now)
        out[known] = paced_boost(log_gain, deficit, age, exposures, target, cfg)
        return out

    def record(self, item_ids_shown: Sequence[Hashable], now: float | dt.datetime) -> None:
        """Count one exposure per shown id (repeats count again); only exposures inside the window count."""
        now = to_seconds(now)
        with self._lock:
            idx = self._lookup(item_ids_shown)
            idx = idx[idx >= 0]
            idx = idx[(now - self._published[idx]) / HOUR < self.cfg.window_hours]
            np.add.at(self._exposures, idx, 1.0)
            if now - self._pruned_at >= HOUR:
                self._prune(now)

    def state(self, item_ids: Sequence[Hashable]) -> dict[str, np.ndarray]:
        """Targets, exposures so far and current gains of the given ids (NaN for unknown ids)."""
        with self._lock:
            idx = self._lookup(item_ids)
            known = idx >= 0
            out = {}
            for name, values in (("target", self._target), ("exposures", self._exposures),
                                 ("gain", np.exp(self._log_gain))):  # fmt: skip
                col = np.full(len(item_ids), np.nan)
                col[known] = values[idx[known]]
                out[name] = col
            return out

    def prune(self, now: float | dt.datetime) -> int:
        """Forget items past their window (their boost is 1 anyway); returns how many were dropped."""
        with self._lock:
            return self._prune(to_seconds(now))

    def _prune(self, now: float) -> int:
        self._pruned_at = now
        n = len(self._ids)
        keep = np.flatnonzero((now - self._published[:n]) / HOUR < self.cfg.window_hours)
        dropped = n - len(keep)
        if dropped:
            self._ids = [self._ids[i] for i in keep]
            self._index = {item: j for j, item in enumerate(self._ids)}
            for name in self._COLUMNS:
                values = getattr(self, name)
                values[: len(keep)] = values[keep]
                values[len(keep) : n] = 0.0
        return dropped
