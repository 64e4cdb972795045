"""A seeded simulator of a user-generated-content feed, written through the event-log contract.

Hidden ground truth (never logged, written to the ``truth`` layer for evaluation):

* users have interest vectors over topics (Dirichlet), an activity level and a click bias;
* items have a topic, a click quality and a conversion quality; their content vector is the topic's embedding
  plus noise, so content-based cold-start methods have a real signal;
* a click happens with ``exam(position) * sigmoid(attractiveness)`` (position-based model); a conversion
  (like / follow / collect) needs a click and has its own probability; dwell follows clicks.

The cold-start phenomena the models exist for are built in:

* new users (signed up less than ``new_user_days`` ago) are a small minority of impressions, click more
  (``new_user_logit_shift``), follow their interests less and popularity more, so a single model fitted on
  the warm majority under-serves them;
* new items start with no history; an author publishes more when their recent items got early exposure
  (``publish_exposure_gain``), which is what a new-item boost experiment should move on the author side;
* exposure comes from a channel mix per policy (``popularity``, ``random``, ``boost``), and an experiment can
  split users or authors between a control and a treatment policy.

Each day is simulated hour by hour: items published in an hour become eligible the next hour, popularity is
updated every hour, and each hour's impressions are streamed into the day's partition, so memory is bounded by
one hour's traffic. The whole run draws from one ``numpy`` generator seeded once: the same config gives the
same bytes.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.data.contract import ASSIGNMENTS, RECALL_CHANNELS, Store, day_bounds, write_file

log = logging.getLogger(__name__)

CATEGORIES = (
    "food", "travel", "fashion", "beauty", "fitness", "tech", "gaming", "pets",
    "music", "movies", "books", "home", "parenting", "finance", "cars", "art",
)  # fmt: skip
OCCUPATIONS = ("student", "engineer", "teacher", "artist", "doctor", "sales", "retired", "other")
DEVICES = ("ios", "android", "web")
HOURS = 24
US_PER_SECOND = 1_000_000

Policy = Literal["popularity", "random", "boost"]
Design = Literal["none", "user_split", "author_split"]


class SimulatorConfig(BaseModel):
    """Every knob of the simulator; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 7
    days: int = Field(14, ge=1)
    start_date: dt.date = dt.date(2026, 1, 1)
    users: int = Field(20_000, ge=10, description="Users who exist before the log starts.")
    new_users_per_day: float = Field(0.01, ge=0, description="Daily signups as a share of `users`.")
    new_user_days: int = Field(7, ge=1, description="A user is new for this many days after signup.")
    new_user_activity: float = Field(0.5, gt=0, description="Activity of a new user relative to an old one.")
    n_topics: int = Field(16, ge=2, le=len(CATEGORIES))
    interest_concentration: float = Field(0.3, gt=0, description="Dirichlet alpha of user interests.")
    content_dim: int = Field(16, ge=2)
    content_noise: float = Field(0.6, ge=0)
    author_share: float = Field(0.05, gt=0, le=1)
    initial_items_per_author: float = Field(6.0, ge=1)
    publish_rate: float = Field(0.25, gt=0, description="Base items per author per day.")
    publish_exposure_gain: float = Field(
        1.5, ge=0, description="Publishing rate multiplier at full early exposure is 1 + gain."
    )
    early_exposure_target: int = Field(60, ge=1, description="Exposures in an item's first 24 h that count as full.")
    item_lifetime_days: int = Field(30, ge=1)
    new_item_hours: int = Field(48, ge=1, description="Age under which the new_item channel may show an item.")
    popularity_half_life_days: float = Field(2.0, gt=0)
    requests_per_user_per_day: float = Field(1.0, gt=0, description="Feed requests per user per day, on average.")
    impressions_per_day: int | None = Field(None, ge=1, description="Overrides the traffic volume if set.")
    slate_size: int = Field(10, ge=1, le=100)
    # Click model (logits).
    ctr_bias: float = -3.8
    match_weight: float = 1.2
    quality_weight: float = 0.7
    position_decay: float = Field(0.6, ge=0)
    warm_popularity_weight: float = 0.1
    new_user_logit_shift: float = 0.5
    new_user_match_weight: float = 0.3
    new_user_popularity_weight: float = 0.8
    # Conversion model given a click (logits).
    cvr_bias: float = -3.4
    cvr_match_weight: float = 0.6
    cvr_quality_weight: float = 1.0
    new_user_cvr_shift: float = 0.3
    # Exposure policy: channel mix (popular, interest, new_item, random) per policy.
    policy: Policy = "popularity"
    channel_mix: dict[str, tuple[float, float, float, float]] = Field(
        default_factory=lambda: {
            "popularity": (0.40, 0.45, 0.05, 0.10),
            "random": (0.0, 0.0, 0.0, 1.0),
            "boost": (0.35, 0.40, 0.20, 0.05),
        }
    )
    design: Design = "user_split"
    experiment_id: str = "exp_new_item_boost"
    treatment_policy: Policy = "boost"
    treatment_share: float = Field(0.5, gt=0, lt=1)

    @model_validator(mode="after")
    def _check_mixes(self) -> SimulatorConfig:
        for name in ("popularity", "random", "boost"):
            mix = self.channel_mix.get(name)
            if mix is None or len(mix) != len(RECALL_CHANNELS) or min(mix) < 0 or abs(sum(mix) - 1) > 1e-6:
                raise ValueError(f"channel_mix[{name!r}] must be {len(RECALL_CHANNELS)} shares summing to 1")
        return self

    @property
    def end_date(self) -> dt.date:
        return self.start_date + dt.timedelta(days=self.days - 1)


@dataclass
class SimulationSummary:
    """What a run wrote."""

    days: list[dt.date]
    users: int = 0
    items: int = 0
    impressions: int = 0
    clicks: int = 0
    conversions: int = 0
    publishes: int = 0
    new_user_impressions: int = 0
    seconds: float = 0.0
    per_day: list[dict] = field(default_factory=list)


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


class _State:
    """Ground-truth population state: users, authors, items and their running statistics."""

    def __init__(self, cfg: SimulatorConfig, rng: np.random.Generator) -> None:
        self.cfg = cfg
        self.rng = rng
        self.topic_prior = rng.dirichlet(np.full(cfg.n_topics, 2.0))
        self.topic_embedding = rng.normal(size=(cfg.n_topics, cfg.content_dim)).astype(np.float32)
        self.vocabulary = [[f"{CATEGORIES[k]}_{j}" for j in range(12)] for k in range(cfg.n_topics)]
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
        self.a_bucket = _Grow(np.int8)
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
        self.a_bucket.extend((rng.random(n_auth) < cfg.treatment_share).astype(np.int8))
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

    def content_vectors(self, items: np.ndarray) -> np.ndarray:
        noise = self.rng.normal(0.0, self.cfg.content_noise, (len(items), self.cfg.content_dim))
        return (self.topic_embedding[self.i_topic.view[items]] + noise).astype(np.float32)

    def keywords(self, items: np.ndarray) -> list[list[str]]:
        picks = self.rng.integers(0, 12, (len(items), 3))
        topics = self.i_topic.view[items]
        return [[self.vocabulary[t][j] for j in sorted(set(row))] for t, row in zip(topics, picks, strict=True)]


def _sample_weighted(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    """``n`` indices drawn with replacement with probability proportional to ``weights``."""
    cumulative = np.cumsum(weights)
    return np.searchsorted(cumulative, rng.random(n) * cumulative[-1], side="right").clip(0, len(weights) - 1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class Simulator:
    """Runs a :class:`SimulatorConfig` and writes the contract tables into a :class:`Store`."""

    def __init__(self, cfg: SimulatorConfig, store: Store) -> None:
        self.cfg = cfg
        self.store = store
        self.rng = np.random.default_rng(cfg.seed)
        self.state = _State(cfg, self.rng)
        self._next_request = 0

    # ---- bootstrap ---------------------------------------------------------------------------------------
    def _bootstrap(self, start_us: int) -> tuple[np.ndarray, np.ndarray]:
        cfg, rng, st = self.cfg, self.rng, self.state
        two_years_us = 730 * 86_400 * US_PER_SECOND
        signup = np.sort(start_us - rng.integers(1, two_years_us, cfg.users))
        users = st.add_users(signup)
        n_items = int(st.a_user.n * cfg.initial_items_per_author)
        authors = rng.integers(0, st.a_user.n, n_items)
        lifetime_us = cfg.item_lifetime_days * 86_400 * US_PER_SECOND
        publish = start_us - rng.integers(1, lifetime_us, n_items)
        order = np.argsort(publish, kind="stable")
        items = st.add_items(authors[order], publish[order])
        # Items published before the log starts arrive with the popularity their quality would have earned.
        age_days = (start_us - st.i_publish.view[items]) / (86_400 * US_PER_SECOND)
        warm = rng.poisson(20 * np.exp(0.8 * st.i_quality.view[items]) * np.exp(-age_days / 10))
        st.i_popularity.view[items] = warm
        st.i_clicks.view[items] = warm
        st.i_exposures.view[items] = warm * 12
        st.i_early.view[items] = cfg.early_exposure_target
        return users, items

    # ---- one hour of traffic -----------------------------------------------------------------------------
    def _requests_per_day(self) -> int:
        cfg = self.cfg
        if cfg.impressions_per_day is not None:
            return max(1, round(cfg.impressions_per_day / cfg.slate_size))
        return max(1, round(cfg.users * cfg.requests_per_user_per_day))

    def _draw_channel(
        self, channel: int, users: np.ndarray, eligible: np.ndarray, new_items: np.ndarray,
        new_treated: np.ndarray, treated_only: np.ndarray,
    ) -> np.ndarray:  # fmt: skip
        """One item per slot for slots of ``channel`` (index into RECALL_CHANNELS)."""
        rng, st, n = self.rng, self.state, len(users)
        name = RECALL_CHANNELS[channel]
        if name == "popular" or (name == "new_item" and len(new_items) == 0):
            return eligible[_sample_weighted(rng, st.i_popularity.view[eligible] + 1.0, n)]
        if name == "random":
            return eligible[rng.integers(0, len(eligible), n)]
        if name == "new_item":
            out = new_items[rng.integers(0, len(new_items), n)]
            if len(new_treated) and treated_only.any():
                k = int(treated_only.sum())
                out[treated_only] = new_treated[rng.integers(0, len(new_treated), k)]
            return out
        # interest: a topic from the user's interests, then an item of that topic by popularity
        cum = np.cumsum(st.u_interest[users], axis=1)
        topics = (cum < rng.random((n, 1)) * cum[:, -1:]).sum(axis=1)
        out = np.empty(n, dtype=np.int64)
        item_topics = st.i_topic.view[eligible]
        for topic in np.unique(topics):
            slots = np.flatnonzero(topics == topic)
            pool = eligible[item_topics == topic]
            if len(pool) == 0:
                pool = eligible
            out[slots] = pool[_sample_weighted(rng, st.i_popularity.view[pool] + 1.0, len(slots))]
        return out

    def _hour(self, day_index: int, hour: int, n_requests: int, hour_start_us: int) -> tuple[pa.Table, pa.Table]:
        cfg, rng, st = self.cfg, self.rng, self.state
        hour_us = 3600 * US_PER_SECOND
        new_user_us = cfg.new_user_days * 86_400 * US_PER_SECOND
        # Who asks for a feed: users who had signed up by this hour, by activity (new users less active).
        signup = st.u_signup.view
        can_request = signup < hour_start_us
        is_new_user = (hour_start_us - signup) < new_user_us
        weights = st.u_activity.view * can_request * np.where(is_new_user, cfg.new_user_activity, 1.0)
        req_user = _sample_weighted(rng, weights, n_requests)
        req_time = hour_start_us + np.sort(rng.integers(0, hour_us, n_requests))
        # Which items can be shown: published before this hour and not expired.
        publish = st.i_publish.view
        age_us = hour_start_us - publish
        eligible = np.flatnonzero((age_us > 0) & (age_us < cfg.item_lifetime_days * 86_400 * US_PER_SECOND))
        new_mask = age_us[eligible] < cfg.new_item_hours * 3600 * US_PER_SECOND
        new_items = eligible[new_mask]
        new_treated = new_items[st.a_bucket.view[st.i_author.view[new_items]] == 1]
        # Channel of every slot from its request's policy.
        slate = cfg.slate_size
        treated_req = (
            st.u_bucket.view[req_user] == 1 if cfg.design == "user_split" else np.zeros(n_requests, dtype=bool)
        )
        base_mix = np.asarray(cfg.channel_mix[cfg.policy])
        treat_mix = np.asarray(cfg.channel_mix[cfg.treatment_policy])
        if cfg.design == "author_split":
            # Everyone sees the treatment mix; the extra new-item slots go to treatment authors only.
            base_mix = treat_mix
        slot_user = np.repeat(req_user, slate)
        slot_treated = np.repeat(treated_req, slate)
        u = rng.random(n_requests * slate)
        channel = np.where(
            slot_treated,
            np.searchsorted(np.cumsum(treat_mix), u, side="right"),
            np.searchsorted(np.cumsum(base_mix), u, side="right"),
        ).clip(0, len(RECALL_CHANNELS) - 1)
        treated_only = np.zeros(n_requests * slate, dtype=bool)
        if cfg.design == "author_split":
            control_new_share = cfg.channel_mix[cfg.policy][2] / max(treat_mix[2], 1e-9)
            treated_only = rng.random(n_requests * slate) >= control_new_share
        items = np.empty(n_requests * slate, dtype=np.int64)
        for c in range(len(RECALL_CHANNELS)):
            slots = np.flatnonzero(channel == c)
            if len(slots):
                items[slots] = self._draw_channel(
                    c, slot_user[slots], eligible, new_items, new_treated, treated_only[slots]
                )
        items = items.reshape(n_requests, slate)
        channel = channel.reshape(n_requests, slate)
        self._dedupe(items, channel, eligible)
        # The feed's ranker orders each slate by observed smoothed CTR plus noise.
        est_ctr = (st.i_clicks.view[items] + 1.0) / (st.i_exposures.view[items] + 20.0)
        order = np.argsort(-(np.log(est_ctr) + rng.gumbel(size=items.shape) * 0.5), axis=1, kind="stable")
        items = np.take_along_axis(items, order, axis=1).ravel()
        channel = np.take_along_axis(channel, order, axis=1).ravel()
        position = np.tile(np.arange(slate, dtype=np.int16), n_requests)
        # Responses from the hidden truth.
        user_new = np.repeat(is_new_user[req_user], slate)
        topic = st.i_topic.view[items]
        match = np.clip(st.u_interest[slot_user, topic] * cfg.n_topics, 0.0, 5.0) - 1.0
        pop_raw = np.log1p(st.i_popularity.view[eligible])
        popularity = (np.log1p(st.i_popularity.view[items]) - pop_raw.mean()) / (pop_raw.std() + 1e-9)
        attract = (
            cfg.ctr_bias
            + cfg.quality_weight * st.i_quality.view[items]
            + st.u_bias.view[slot_user]
            + np.where(
                user_new,
                cfg.new_user_logit_shift
                + cfg.new_user_match_weight * match
                + cfg.new_user_popularity_weight * popularity,
                cfg.match_weight * match + cfg.warm_popularity_weight * popularity,
            )
        )
        p_click = (1.0 + position) ** -cfg.position_decay * _sigmoid(attract)
        p_conv = _sigmoid(
            cfg.cvr_bias
            + cfg.cvr_quality_weight * st.i_cvr_quality.view[items]
            + cfg.cvr_match_weight * match
            + cfg.new_user_cvr_shift * user_new
        )
        click = rng.random(len(items)) < p_click
        conversion = click & (rng.random(len(items)) < p_conv)
        dwell = np.where(click, rng.lognormal(np.log(20.0) + 0.4 * match + 0.3 * st.i_quality.view[items], 0.6), 0.0)
        # Update what the platform observes.
        np.add.at(st.i_exposures.view, items, 1)
        np.add.at(st.i_clicks.view, items, click.astype(np.int64))
        np.add.at(st.i_popularity.view, items, click.astype(np.float64))
        early = (hour_start_us - publish[items]) < 86_400 * US_PER_SECOND
        np.add.at(st.i_early.view, items[early], 1)
        # Bucket logged with each impression.
        if cfg.design == "user_split":
            bucket = st.u_bucket.view[slot_user]
        elif cfg.design == "author_split":
            bucket = st.a_bucket.view[st.i_author.view[items]]
        else:
            bucket = np.zeros(len(items), dtype=np.int8)
        request_id = np.int64(day_index + 1) * 1_000_000_000 + self._next_request + np.arange(n_requests)
        self._next_request += n_requests
        event_time = np.repeat(req_time, slate)
        request_ids = np.repeat(request_id, slate)
        impressions = pa.table(
            {
                "request_id": request_ids,
                "user_id": slot_user,
                "item_id": items,
                "event_time": pa.array(event_time, pa.timestamp("us", tz="UTC")),
                "position": position,
                "recall_channel": pa.DictionaryArray.from_arrays(
                    channel.astype(np.int32), pa.array(RECALL_CHANNELS)
                ).cast(pa.string()),
                "experiment_bucket": pa.DictionaryArray.from_arrays(
                    bucket.astype(np.int32), pa.array(["control", "treatment"])
                ).cast(pa.string()),
                "click": click.astype(np.int8),
                "conversion": conversion.astype(np.int8),
                "dwell_seconds": dwell.astype(np.float32),
            }
        )
        truth = pa.table(
            {
                "request_id": request_ids,
                "position": position,
                "item_id": items,
                "event_time": pa.array(event_time, pa.timestamp("us", tz="UTC")),
                "is_new_user": user_new,
                "p_click": p_click.astype(np.float32),
                "p_conversion_given_click": p_conv.astype(np.float32),
            }
        )
        return impressions, truth

    def _dedupe(self, items: np.ndarray, channel: np.ndarray, eligible: np.ndarray) -> None:
        """Replace repeated items within a slate by random draws, in place."""
        if len(eligible) <= items.shape[1]:
            return
        for _ in range(50):
            order = np.argsort(items, axis=1, kind="stable")
            sorted_items = np.take_along_axis(items, order, axis=1)
            dup_sorted = np.zeros_like(items, dtype=bool)
            dup_sorted[:, 1:] = sorted_items[:, 1:] == sorted_items[:, :-1]
            if not dup_sorted.any():
                return
            rows, cols = np.nonzero(dup_sorted)
            cols = order[rows, cols]
            items[rows, cols] = eligible[self.rng.integers(0, len(eligible), len(rows))]
            channel[rows, cols] = RECALL_CHANNELS.index("random")

    # ---- day loop ----------------------------------------------------------------------------------------
    def run(self) -> SimulationSummary:
        """Simulate every day and write all partitions; partitions of other days in the dataset are removed."""
        cfg, rng, st = self.cfg, self.rng, self.state
        t0 = time.perf_counter()
        days = [cfg.start_date + dt.timedelta(days=d) for d in range(cfg.days)]
        summary = SimulationSummary(days=days)
        start_us = int(day_bounds(cfg.start_date)[0].timestamp()) * US_PER_SECOND
        boot_users, boot_items = self._bootstrap(start_us)
        decay = 0.5 ** (1.0 / (cfg.popularity_half_life_days * HOURS))
        requests_per_hour = self._requests_per_day() / HOURS
        for d, day in enumerate(days):
            day_us = start_us + d * 86_400 * US_PER_SECOND
            # Signups today.
            n_new = rng.poisson(cfg.new_users_per_day * cfg.users)
            new_users = st.add_users(np.sort(day_us + rng.integers(0, 86_400 * US_PER_SECOND, n_new)))
            # Publishing today: authors publish more after their recent items got early exposure.
            n_authors = st.a_user.n
            author_live = st.u_signup.view[st.a_user.view] < day_us + 86_400 * US_PER_SECOND
            rate = st.a_rate.view * (1.0 + cfg.publish_exposure_gain * st.a_early.view) * author_live
            counts = rng.poisson(rate)
            authors = np.repeat(np.arange(n_authors), counts)
            earliest = np.maximum(st.u_signup.view[st.a_user.view[authors]] - day_us, 0)
            offsets = earliest + (rng.random(len(authors)) * (86_400 * US_PER_SECOND - earliest)).astype(np.int64)
            order = np.argsort(offsets, kind="stable")
            new_items = st.add_items(authors[order], day_us + offsets[order])
            # Traffic, hour by hour.
            day_clicks = day_conv = day_imps = day_new = 0
            with (
                self.store.writer("impressions", day) as imp_out,
                self.store.writer("impression_truth", day, layer="truth") as truth_out,
            ):
                for hour in range(HOURS):
                    n_req = rng.poisson(requests_per_hour)
                    if n_req == 0:
                        continue
                    impressions, truth = self._hour(d, hour, n_req, day_us + hour * 3600 * US_PER_SECOND)
                    imp_out.write(impressions)
                    truth_out.write(truth)
                    day_imps += impressions.num_rows
                    day_clicks += int(np.asarray(impressions["click"]).sum())
                    day_conv += int(np.asarray(impressions["conversion"]).sum())
                    day_new += int(np.asarray(truth["is_new_user"]).sum())
                    st.i_popularity.view[:] *= decay
            self._update_author_early_exposure(day_us)
            # Dimension and event tables of the day.
            day_users = np.concatenate([boot_users, new_users]) if d == 0 else new_users
            day_items = np.concatenate([boot_items, new_items]) if d == 0 else new_items
            self.store.write("users", day, self._users_table(day_users))
            self.store.write("items", day, self._items_table(day_items))
            self.store.write("publishes", day, self._publishes_table(new_items))
            self.store.write("assignments", day, self._assignments_table(day_users, day_us, d == 0))
            summary.impressions += day_imps
            summary.clicks += day_clicks
            summary.conversions += day_conv
            summary.new_user_impressions += day_new
            summary.publishes += len(new_items)
            summary.per_day.append(
                {"date": day.isoformat(), "impressions": day_imps, "clicks": day_clicks, "signups": n_new,
                 "publishes": len(new_items)}
            )  # fmt: skip
            log.info("simulated %s: %d impressions, %d new items", day, day_imps, len(new_items))
        for table, layer in (
            ("users", "raw"), ("items", "raw"), ("impressions", "raw"), ("publishes", "raw"),
            ("assignments", "raw"), ("impression_truth", "truth"),
        ):  # fmt: skip
            self.store.drop_partitions_except(table, days, layer)
        self._write_entity_truth()
        summary.users = st.u_signup.n
        summary.items = st.i_author.n
        summary.seconds = time.perf_counter() - t0
        return summary

    def _update_author_early_exposure(self, day_us: int) -> None:
        """Items whose first 24 h ended today feed their author's early-exposure score (an EMA)."""
        st, cfg = self.state, self.cfg
        publish = st.i_publish.view
        done = np.flatnonzero((publish >= day_us - 86_400 * US_PER_SECOND) & (publish < day_us))
        if len(done) == 0:
            return
        ratio = np.minimum(1.0, st.i_early.view[done] / cfg.early_exposure_target)
        authors = st.i_author.view[done]
        total = np.bincount(authors, weights=ratio, minlength=st.a_user.n)
        count = np.bincount(authors, minlength=st.a_user.n)
        has = count > 0
        st.a_early.view[has] = 0.5 * st.a_early.view[has] + 0.5 * total[has] / count[has]

    # ---- tables ------------------------------------------------------------------------------------------
    def _users_table(self, users: np.ndarray) -> pa.Table:
        rng, st, n = self.rng, self.state, len(users)
        gender = np.array(["F", "M"], dtype=object)[rng.integers(0, 2, n)]
        gender[rng.random(n) < 0.05] = None
        return pa.table(
            {
                "user_id": users,
                "signup_time": pa.array(st.u_signup.view[users], pa.timestamp("us", tz="UTC")),
                "gender": pa.array(gender, pa.string()),
                "age": rng.integers(16, 65, n).astype(np.int16),
                "occupation": pa.array(np.array(OCCUPATIONS, dtype=object)[rng.integers(0, len(OCCUPATIONS), n)]),
                "region": pa.array([f"r{r:02d}" for r in rng.integers(0, 30, n)]),
                "device": pa.array(np.array(DEVICES, dtype=object)[rng.integers(0, len(DEVICES), n)]),
                "is_author": st.u_author.view[users] >= 0,
            }
        )

    def _items_table(self, items: np.ndarray) -> pa.Table:
        st, cfg = self.state, self.cfg
        vectors = self.state.content_vectors(items)
        return pa.table(
            {
                "item_id": items,
                "author_id": st.a_user.view[st.i_author.view[items]],
                "category": pa.array(np.array(CATEGORIES, dtype=object)[st.i_topic.view[items]], pa.string()),
                "keywords": pa.array(self.state.keywords(items), pa.list_(pa.string())),
                "content_vector": pa.ListArray.from_arrays(
                    np.arange(0, (len(items) + 1) * cfg.content_dim, cfg.content_dim, dtype=np.int32),
                    pa.array(vectors.ravel(), pa.float32()),
                ),
                "publish_time": pa.array(st.i_publish.view[items], pa.timestamp("us", tz="UTC")),
            }
        )

    def _publishes_table(self, items: np.ndarray) -> pa.Table:
        st = self.state
        return pa.table(
            {
                "item_id": items,
                "author_id": st.a_user.view[st.i_author.view[items]],
                "publish_time": pa.array(st.i_publish.view[items], pa.timestamp("us", tz="UTC")),
            }
        )

    def _assignments_table(self, users: np.ndarray, day_us: int, first_day: bool) -> pa.Table:
        """Units enter the experiment when first seen: everyone existing on day one, then at signup."""
        cfg, st = self.cfg, self.state
        if cfg.design == "none":
            return ASSIGNMENTS.schema.empty_table()
        assigned = np.maximum(st.u_signup.view[users], day_us) if first_day else st.u_signup.view[users]
        if cfg.design == "user_split":
            unit_type, units, bucket = "user", users, st.u_bucket.view[users]
        else:
            authors = st.u_author.view[users]
            keep = authors >= 0
            unit_type, units, bucket = "author", users[keep], st.a_bucket.view[authors[keep]]
            assigned = assigned[keep]
        n = len(units)
        return pa.table(
            {
                "experiment_id": pa.array([cfg.experiment_id] * n, pa.string()),
                "unit_type": pa.array([unit_type] * n, pa.string()),
                "unit_id": units,
                "bucket": pa.array(np.array(["control", "treatment"], dtype=object)[bucket], pa.string()),
                "design": pa.array([cfg.design] * n, pa.string()),
                "assigned_at": pa.array(assigned, pa.timestamp("us", tz="UTC")),
            }
        )

    def _write_entity_truth(self) -> None:
        st, cfg = self.state, self.cfg
        truth_dir = self.store.root / "truth"
        interest = st.u_interest.astype(np.float32)
        write_file(
            truth_dir / "user_truth.parquet",
            pa.table(
                {
                    "user_id": np.arange(st.u_signup.n),
                    "activity": st.u_activity.view,
                    "click_bias": st.u_bias.view,
                    "treatment": st.u_bucket.view.astype(bool),
                    "interest": pa.ListArray.from_arrays(
                        np.arange(0, (st.u_signup.n + 1) * cfg.n_topics, cfg.n_topics, dtype=np.int32),
                        pa.array(interest.ravel()),
                    ),
                }
            ),
        )
        write_file(
            truth_dir / "item_truth.parquet",
            pa.table(
                {
                    "item_id": np.arange(st.i_author.n),
                    "topic": st.i_topic.view,
                    "quality": st.i_quality.view,
                    "cvr_quality": st.i_cvr_quality.view,
                    "exposures": st.i_exposures.view,
                    "clicks": st.i_clicks.view,
                    "early_exposures": st.i_early.view,
                    "author_treatment": st.a_bucket.view[st.i_author.view].astype(bool),
                }
            ),
        )
