"""The simulated world: users, authors and items with their hidden truth, and the counters the platform sees.

Everything that changes the population lives here (bootstrap, signups, publishing, the authors' response to early
exposure); the hour-by-hour traffic that reads it is in :mod:`pipelines.data.simulator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.data.sim_config import DAY_US, SimulatorConfig
from pipelines.data.sim_content import ContentModel, PublishedContent


class _Grow:
    """A growable 1-D numpy column (amortised doubling)."""

    def __init__(self, dtype: np.dtype | type, capacity: int = 1024) -> None:
        self._data = np.zeros(capacity, dtype=dtype)
        self.n = 0

    def extend(self, values: np.ndarray) -> None:
        need = self.n + len(values)
        if need > len(self._data):
            bigger = np.zeros(max(need, 2 * len(self._data)), dtype=self._data.dtype)
            bigger[: self.n] = self._data[: self.n]
            self._data = bigger
        self._data[self.n : need] = values
        self.n = need

    @property
    def view(self) -> np.ndarray:
        return self._data[: self.n]


def sample_weighted(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    """``n`` indices drawn with replacement with probability proportional to ``weights``."""
    cumulative = np.cumsum(weights)
    return np.searchsorted(cumulative, rng.random(n) * cumulative[-1], side="right").clip(0, len(weights) - 1)


def author_buckets(u: np.ndarray, cfg) -> np.ndarray:
    """Each author's group from one uniform draw: treatment below ``treatment_share``; in a balanced author split
    control below twice the share and the rest held out (index 2), else control (the same draws either way)."""
    treated = u < cfg.treatment_share
    if cfg.design != "balanced_author_split":
        return treated.astype(np.int8)
    return np.where(treated, 1, np.where(u < 2 * cfg.treatment_share, 0, 2)).astype(np.int8)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Responses:
    """What users did with the slots they were shown, and the true probabilities behind it (one row per slot)."""

    p_click: np.ndarray  # float64: click probability, with position bias
    p_conversion: np.ndarray  # float64: conversion probability given a click
    click: np.ndarray  # bool
    conversion: np.ndarray  # bool: needs a click
    dwell: np.ndarray  # float64 seconds; 0 without a click


class World:
    """Ground-truth population state: users, authors, items and their running statistics.

    The ``i_exposures``, ``i_clicks`` and ``i_popularity`` counters are what the platform observes; every other
    attribute is hidden truth.
    """

    def __init__(self, cfg: SimulatorConfig, rng: np.random.Generator) -> None:
        self.cfg = cfg
        self.rng = rng
        self.topic_prior = rng.dirichlet(np.full(cfg.n_topics, 2.0))
        self.content_model = ContentModel(cfg)  # its own generator: content knobs leave the traffic as it is
        # Users.
        self.u_signup = _Grow(np.int64)  # microseconds since epoch
        self.u_activity = _Grow(np.float64)
        self.u_bias = _Grow(np.float64)
        self.u_bucket = _Grow(np.int8)  # 0 control, 1 treatment (user split)
        self.u_author = _Grow(np.int64)  # author index or -1
        self.u_interest = np.zeros((0, cfg.n_topics))
        # Authors.
        self.a_user = _Grow(np.int64)
        self.a_topic = _Grow(np.int64)
        self.a_quality = _Grow(np.float64)
        self.a_rate = _Grow(np.float64)
        self.a_early = _Grow(np.float64)  # EMA of recent items' early-exposure ratio, in [0, 1]
        self.a_bucket = _Grow(np.int8)  # index into BUCKETS (an author design's groups)
        # Items.
        self.i_author = _Grow(np.int64)
        self.i_topic = _Grow(np.int64)
        self.i_quality = _Grow(np.float64)
        self.i_cvr_quality = _Grow(np.float64)
        self.i_publish = _Grow(np.int64)
        self.i_popularity = _Grow(np.float64)  # decayed clicks (what the feed's ranker can see)
        self.i_exposures = _Grow(np.int64)
        self.i_clicks = _Grow(np.int64)
        self.i_early = _Grow(np.int64)  # exposures in the first 24 h

    # ---- population growth ------------------------------------------------------------------------------
    def add_users(self, signup_us: np.ndarray) -> np.ndarray:
        cfg, rng, n = self.cfg, self.rng, len(signup_us)
        first = self.u_signup.n
        self.u_signup.extend(signup_us)
        self.u_activity.extend(rng.lognormal(0.0, 0.8, n))
        self.u_bias.extend(rng.normal(0.0, 0.3, n))
        self.u_bucket.extend((rng.random(n) < cfg.treatment_share).astype(np.int8))
        interest = rng.dirichlet(np.full(cfg.n_topics, cfg.interest_concentration), n)
        self.u_interest = np.vstack([self.u_interest, interest])
        is_author = rng.random(n) < cfg.author_share
        author_idx = np.full(n, -1, dtype=np.int64)
        n_auth = int(is_author.sum())
        author_idx[is_author] = np.arange(self.a_user.n, self.a_user.n + n_auth)
        self.u_author.extend(author_idx)
        users = np.arange(first, first + n)
        self.a_user.extend(users[is_author])
        self.a_topic.extend(np.argmax(interest[is_author], axis=1))
        self.a_quality.extend(rng.normal(0.0, 0.6, n_auth))
        self.a_rate.extend(cfg.publish_rate * rng.lognormal(0.0, 0.5, n_auth))
        self.a_early.extend(np.full(n_auth, 0.5))
        self.a_bucket.extend(author_buckets(rng.random(n_auth), cfg))
        return users

    def add_items(self, authors: np.ndarray, publish_us: np.ndarray) -> np.ndarray:
        cfg, rng, n = self.cfg, self.rng, len(authors)
        first = self.i_author.n
        own_topic = rng.random(n) < 0.75
        topic = np.where(own_topic, self.a_topic.view[authors], rng.choice(cfg.n_topics, n, p=self.topic_prior))
        quality = self.a_quality.view[authors] + rng.normal(0.0, 0.7, n)
        self.i_author.extend(authors)
        self.i_topic.extend(topic)
        self.i_quality.extend(quality)
        self.i_cvr_quality.extend(0.6 * quality + rng.normal(0.0, 0.6, n))
        self.i_publish.extend(publish_us)
        for column in (self.i_popularity, self.i_exposures, self.i_clicks, self.i_early):
            column.extend(np.zeros(n, dtype=column.view.dtype))
        return np.arange(first, first + n)

    def content(self, items: np.ndarray) -> PublishedContent:
        """What the platform reads about ``items`` when published: category, keywords, content embedding.

        Drawn once per item (each item is written to ``items`` once), from its hidden topic, quality and author
        through :class:`~pipelines.data.sim_content.ContentModel`; none of them is handed out as it is.
        """
        return self.content_model.describe(
            self.i_topic.view[items], self.i_quality.view[items], self.i_author.view[items], self.a_topic.view
        )

    # ---- population over time ----------------------------------------------------------------------------
    def bootstrap(self, start_us: int) -> tuple[np.ndarray, np.ndarray]:
        """Create the users and items that exist before the log starts; returns their indices."""
        cfg, rng = self.cfg, self.rng
        two_years_us = 730 * DAY_US
        signup = np.sort(start_us - rng.integers(1, two_years_us, cfg.users))
        users = self.add_users(signup)
        n_items = int(self.a_user.n * cfg.initial_items_per_author)
        authors = rng.integers(0, self.a_user.n, n_items)
        lifetime_us = cfg.item_lifetime_days * DAY_US
        publish = start_us - rng.integers(1, lifetime_us, n_items)
        order = np.argsort(publish, kind="stable")
        items = self.add_items(authors[order], publish[order])
        # Items published before the log starts arrive with the popularity their quality would have earned.
        age_days = (start_us - self.i_publish.view[items]) / DAY_US
        warm = rng.poisson(20 * np.exp(0.8 * self.i_quality.view[items]) * np.exp(-age_days / 10))
        self.i_popularity.view[items] = warm
        self.i_clicks.view[items] = warm
        self.i_exposures.view[items] = warm * 12
        self.i_early.view[items] = cfg.early_exposure_target
        return users, items

    def sign_up(self, day_us: int) -> np.ndarray:
        """The day's signups, at uniform times of the day; returns the new users."""
        n_new = self.rng.poisson(self.cfg.new_users_per_day * self.cfg.users)
        return self.add_users(np.sort(day_us + self.rng.integers(0, DAY_US, n_new)))

    def publish(self, day_us: int) -> np.ndarray:
        """The day's new items: authors publish more after their recent items got early exposure."""
        cfg, rng = self.cfg, self.rng
        n_authors = self.a_user.n
        author_live = self.u_signup.view[self.a_user.view] < day_us + DAY_US
        rate = self.a_rate.view * (1.0 + cfg.publish_exposure_gain * self.a_early.view) * author_live
        counts = rng.poisson(rate)
        authors = np.repeat(np.arange(n_authors), counts)
        earliest = np.maximum(self.u_signup.view[self.a_user.view[authors]] - day_us, 0)
        offsets = earliest + (rng.random(len(authors)) * (DAY_US - earliest)).astype(np.int64)
        order = np.argsort(offsets, kind="stable")
        return self.add_items(authors[order], day_us + offsets[order])

    def update_author_early_exposure(self, day_us: int) -> None:
        """Items whose first 24 h ended today feed their author's early-exposure score (an EMA)."""
        publish = self.i_publish.view
        done = np.flatnonzero((publish >= day_us - DAY_US) & (publish < day_us))
        if len(done) == 0:
            return
        ratio = np.minimum(1.0, self.i_early.view[done] / self.cfg.early_exposure_target)
        authors = self.i_author.view[done]
        total = np.bincount(authors, weights=ratio, minlength=self.a_user.n)
        count = np.bincount(authors, minlength=self.a_user.n)
        has = count > 0
        self.a_early.view[has] = 0.5 * self.a_early.view[has] + 0.5 * total[has] / count[has]

    # ---- responses ---------------------------------------------------------------------------------------
    def respond(
        self, users: np.ndarray, items: np.ndarray, is_new_user: np.ndarray, position: np.ndarray, eligible: np.ndarray
    ) -> Responses:
        """Draw clicks (position-based model), conversions and dwell for shown slots from the hidden truth.

        Args:
            users: [n_slots] user index of each slot.
            items: [n_slots] item shown.
            is_new_user: [n_slots] bool, the user is new.
            position: [n_slots] position in the slate.
            eligible: items that could have been shown this hour; popularity is standardised over them.
        """
        cfg, rng = self.cfg, self.rng
        topic = self.i_topic.view[items]
        match = np.clip(self.u_interest[users, topic] * cfg.n_topics, 0.0, 5.0) - 1.0
        pop_raw = np.log1p(self.i_popularity.view[eligible])
        popularity = (np.log1p(self.i_popularity.view[items]) - pop_raw.mean()) / (pop_raw.std() + 1e-9)
        attract = (
            cfg.ctr_bias
            + cfg.quality_weight * self.i_quality.view[items]
            + self.u_bias.view[users]
            + np.where(
                is_new_user,
                cfg.new_user_logit_shift
                + cfg.new_user_match_weight * match
                + cfg.new_user_popularity_weight * popularity,
                cfg.match_weight * match + cfg.warm_popularity_weight * popularity,
            )
        )
        p_click = (1.0 + position) ** -cfg.position_decay * _sigmoid(attract)
        p_conv = _sigmoid(
            cfg.cvr_bias
            + cfg.cvr_quality_weight * self.i_cvr_quality.view[items]
            + cfg.cvr_match_weight * match
            + cfg.new_user_cvr_shift * is_new_user
        )
        click = rng.random(len(items)) < p_click
        conversion = click & (rng.random(len(items)) < p_conv)
        dwell = np.where(click, rng.lognormal(np.log(20.0) + 0.4 * match + 0.3 * self.i_quality.view[items], 0.6), 0.0)
        return Responses(p_click, p_conv, click, conversion, dwell)
