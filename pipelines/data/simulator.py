"""A seeded simulator of a user-generated-content feed, written through the event-log contract.

Hidden ground truth (never logged, written to the ``truth`` layer for evaluation):

* users have interest vectors over topics (Dirichlet), an activity level and a click bias;
* items have a topic, a click quality and a conversion quality; what the platform reads of them is what it has at
  publish time (:mod:`~pipelines.data.sim_content`): a category the author files (usually the topic's), mixed
  keywords and an encoder-style embedding that carries the topic partly and the quality weakly, beside author,
  format and nuisance style, so content-based cold-start methods have a real but imperfect signal;
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

Layout: :mod:`~pipelines.data.sim_config` holds the knobs, :mod:`~pipelines.data.sim_world` the population and
its hidden truth (including the click model), :mod:`~pipelines.data.sim_feed` the feed that orders each slate,
:mod:`~pipelines.data.sim_content` the published content, :mod:`~pipelines.data.sim_tables` the tables written;
this module runs the days and the steps of each hour.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipelines.data import sim_tables
from pipelines.data.contract import RECALL_CHANNELS, Store, day_bounds
from pipelines.data.schemas import SIM_RECALL_CHANNELS
from pipelines.data.sim_config import (
    AUTHOR_DESIGNS,
    CATEGORIES,
    DAY_US,
    DEVICES,
    HOUR_US,
    HOURS,
    OCCUPATIONS,
    US_PER_SECOND,
    Design,
    Policy,
    SimulationSummary,
    SimulatorConfig,
)
from pipelines.data.sim_feed import Feed, LegacyFeed, Requests, Slates
from pipelines.data.sim_world import Responses, World, sample_weighted

# The config, the world and the tables live in their own modules; these names stay importable from here.
__all__ = [
    "CATEGORIES", "DEVICES", "HOURS", "OCCUPATIONS", "US_PER_SECOND", "Design", "Policy", "SimulationSummary",
    "Simulator", "SimulatorConfig",
]  # fmt: skip

log = logging.getLogger(__name__)

# Tables the simulator owns, by layer: a run removes their partitions of days it did not simulate.
_TABLES = (
    ("users", "raw"), ("items", "raw"), ("impressions", "raw"), ("publishes", "raw"),
    ("assignments", "raw"), ("impression_truth", "truth"),
)  # fmt: skip


@dataclass(frozen=True)
class _Pool:
    """The items that can be shown in an hour."""

    eligible: np.ndarray  # published before the hour and not expired
    new: np.ndarray  # eligible and younger than new_item_hours
    new_treated: np.ndarray  # new items of treatment authors


class Simulator:
    """Runs a :class:`SimulatorConfig` and writes the contract tables into a :class:`Store`.

    One simulated hour is a fixed sequence of steps (see :meth:`_hour`); only :meth:`_order`, the feed, decides
    what is shown first, and it reads no hidden truth.
    """

    def __init__(self, cfg: SimulatorConfig, store: Store) -> None:
        self.cfg = cfg
        self.store = store
        self.rng = np.random.default_rng(cfg.seed)
        self.world = World(cfg, self.rng)
        self.feed: Feed = LegacyFeed(self.world, self.rng)
        self._decay = 0.5 ** (1.0 / (cfg.popularity_half_life_days * HOURS))  # hourly popularity decay
        self._next_request = 0

    # ---- day loop ----------------------------------------------------------------------------------------
    def run(self, after_day: Callable[[dt.date], None] | None = None) -> SimulationSummary:
        """Simulate every day and write all partitions; partitions of other days in the dataset are removed.

        Args:
            after_day: called with each day once its partitions are written (a closed-loop experiment validates
                and materializes the day there, trains between periods, and may swap ``self.feed``).
        """
        cfg = self.cfg
        t0 = time.perf_counter()
        days = [cfg.start_date + dt.timedelta(days=d) for d in range(cfg.days)]
        summary = SimulationSummary(days=days)
        start_us = int(day_bounds(cfg.start_date)[0].timestamp()) * US_PER_SECOND
        boot_users, boot_items = self.world.bootstrap(start_us)
        for d, day in enumerate(days):
            self._day(d, day, start_us + d * DAY_US, summary, boot_users, boot_items)
            if after_day is not None:
                after_day(day)
        for table, layer in _TABLES:
            self.store.drop_partitions_except(table, days, layer)
        sim_tables.write_entity_truth(self.world, self.store.root / "truth")
        summary.users = self.world.u_signup.n
        summary.items = self.world.i_author.n
        summary.seconds = time.perf_counter() - t0
        return summary

    def _day(
        self,
        day_index: int,
        day: dt.date,
        day_us: int,
        summary: SimulationSummary,
        boot_users: np.ndarray,
        boot_items: np.ndarray,
    ) -> None:
        """Signups, publishing, 24 hours of traffic, then the day's dimension and event tables.

        The first day's ``users`` and ``items`` partitions also hold the bootstrap population.
        """
        world = self.world
        new_users = world.sign_up(day_us)
        new_items = world.publish(day_us)
        first_day = day_index == 0
        day_items = np.concatenate([boot_items, new_items]) if first_day else new_items
        # The items as filed (the content draws from its own stream, once per item, whatever the feed is).
        items = sim_tables.items_table(world, day_items)
        self.feed.published(items)  # draws nothing from the run's generator: the bytes stay the same
        traffic = self._traffic(day_index, day, day_us)
        world.update_author_early_exposure(day_us)
        day_users = np.concatenate([boot_users, new_users]) if first_day else new_users
        self.store.write("users", day, sim_tables.users_table(world, day_users))
        self.store.write("items", day, items)
        self.store.write("publishes", day, sim_tables.publishes_table(world, new_items))
        self.store.write("assignments", day, sim_tables.assignments_table(world, day_users, day_us, first_day))
        summary.add_day(day, traffic, signups=len(new_users), publishes=len(new_items))
        log.info("simulated %s: %d impressions, %d new items", day, traffic["impressions"], len(new_items))

    def _traffic(self, day_index: int, day: dt.date, day_us: int) -> dict[str, int]:
        """Stream the day's hours into its ``impressions`` and ``impression_truth`` partitions; returns counts."""
        requests_per_hour = self._requests_per_day() / HOURS
        counts = {"impressions": 0, "clicks": 0, "conversions": 0, "new_user_impressions": 0}
        with (
            self.store.writer("impressions", day) as imp_out,
            self.store.writer("impression_truth", day, layer="truth") as truth_out,
        ):
            for hour in range(HOURS):
                n_req = self.rng.poisson(requests_per_hour)
                if n_req == 0:
                    continue
                impressions, truth = self._hour(day_index, n_req, day_us + hour * HOUR_US)
                imp_out.write(impressions)
                truth_out.write(truth)
                self.feed.logged(impressions)
                counts["impressions"] += impressions.num_rows
                counts["clicks"] += int(np.asarray(impressions["click"]).sum())
                counts["conversions"] += int(np.asarray(impressions["conversion"]).sum())
                counts["new_user_impressions"] += int(np.asarray(truth["is_new_user"]).sum())
        return counts

    def _requests_per_day(self) -> int:
        cfg = self.cfg
        if cfg.impressions_per_day is not None:
            return max(1, round(cfg.impressions_per_day / cfg.slate_size))
        return max(1, round(cfg.users * cfg.requests_per_user_per_day))

    # ---- one hour of traffic -----------------------------------------------------------------------------
    def _hour(self, day_index: int, n_requests: int, hour_start_us: int) -> tuple[pa.Table, pa.Table]:
        """One hour: who asks, what is eligible, recall, the feed's order, responses, then what the platform learns.

        Every step draws from the run's one generator in this order, which is what keeps a seed's bytes fixed.
        """
        requests = self._requests(n_requests, hour_start_us)
        pool = self._eligible(hour_start_us)
        candidates = self._candidates(requests, pool)
        slates = self._order(requests, candidates)
        responses = self._respond(requests, slates, pool)
        self._observe(slates, responses, hour_start_us)
        return self._log(day_index, requests, slates, responses)

    def _requests(self, n_requests: int, hour_start_us: int) -> Requests:
        """Who asks for a feed: users who had signed up by this hour, by activity (new users less active)."""
        cfg, world = self.cfg, self.world
        signup = world.u_signup.view
        can_request = signup < hour_start_us
        is_new_user = (hour_start_us - signup) < cfg.new_user_days * DAY_US
        weights = world.u_activity.view * can_request * np.where(is_new_user, cfg.new_user_activity, 1.0)
        user = sample_weighted(self.rng, weights, n_requests)
        time_us = hour_start_us + np.sort(self.rng.integers(0, HOUR_US, n_requests))
        return Requests(user=user, time_us=time_us, is_new_user=is_new_user[user])

    def _eligible(self, hour_start_us: int) -> _Pool:
        """Which items can be shown: published before this hour and not expired."""
        cfg, world = self.cfg, self.world
        age_us = hour_start_us - world.i_publish.view
        eligible = np.flatnonzero((age_us > 0) & (age_us < cfg.item_lifetime_days * DAY_US))
        new = eligible[age_us[eligible] < cfg.new_item_hours * HOUR_US]
        new_treated = new[world.a_bucket.view[world.i_author.view[new]] == 1]
        return _Pool(eligible=eligible, new=new, new_treated=new_treated)

    def _candidates(self, requests: Requests, pool: _Pool) -> Slates:
        """Recall: each slot gets a channel from its request's policy mix, then an item from that channel.

        Repeated items within a slate are replaced by random draws; the slates come out in recall order.
        """
        slate = self.cfg.n_candidates
        slot_user = np.repeat(requests.user, slate)
        channel, treated_only = self._channels(requests)
        items = np.empty(len(slot_user), dtype=np.int64)
        for c in range(len(SIM_RECALL_CHANNELS)):
            slots = np.flatnonzero(channel == c)
            if len(slots):
                items[slots] = self._draw_channel(c, slot_user[slots], pool, treated_only[slots])
        items = items.reshape(-1, slate)
        channel = channel.reshape(-1, slate)
        self._dedupe(items, channel, pool.eligible)
        return Slates(items=items, channel=channel)

    def _channels(self, requests: Requests) -> tuple[np.ndarray, np.ndarray]:
        """The recall channel of every slot, and which new-item slots may only show treatment authors' items."""
        cfg, n_slots = self.cfg, len(requests.user) * self.cfg.n_candidates
        if cfg.design == "user_split":
            treated_req = self.world.u_bucket.view[requests.user] == 1
        else:
            treated_req = np.zeros(len(requests.user), dtype=bool)
        base_mix = np.asarray(cfg.channel_mix[cfg.policy])
        treat_mix = np.asarray(cfg.channel_mix[cfg.treatment_policy])
        if cfg.design in AUTHOR_DESIGNS:
            # Everyone sees the treatment mix; the extra new-item slots go to treatment authors only.
            base_mix = treat_mix
        slot_treated = np.repeat(treated_req, cfg.n_candidates)
        u = self.rng.random(n_slots)
        channel = np.where(
            slot_treated,
            np.searchsorted(np.cumsum(treat_mix), u, side="right"),
            np.searchsorted(np.cumsum(base_mix), u, side="right"),
        ).clip(0, len(SIM_RECALL_CHANNELS) - 1)
        treated_only = np.zeros(n_slots, dtype=bool)
        if cfg.design in AUTHOR_DESIGNS:
            control_new_share = cfg.channel_mix[cfg.policy][2] / max(treat_mix[2], 1e-9)
            treated_only = self.rng.random(n_slots) >= control_new_share
        return channel, treated_only

    def _draw_channel(self, channel: int, users: np.ndarray, pool: _Pool, treated_only: np.ndarray) -> np.ndarray:
        """One item per slot for slots of ``channel`` (index into RECALL_CHANNELS)."""
        rng, world, n = self.rng, self.world, len(users)
        eligible = pool.eligible
        name = RECALL_CHANNELS[channel]
        if name == "popular" or (name == "new_item" and len(pool.new) == 0):
            return eligible[sample_weighted(rng, world.i_popularity.view[eligible] + 1.0, n)]
        if name == "random":
            return eligible[rng.integers(0, len(eligible), n)]
        if name == "new_item":
            out = pool.new[rng.integers(0, len(pool.new), n)]
            if len(pool.new_treated) and treated_only.any():
                k = int(treated_only.sum())
                out[treated_only] = pool.new_treated[rng.integers(0, len(pool.new_treated), k)]
            return out
        # interest: a topic from the user's interests, then an item of that topic by popularity
        cum = np.cumsum(world.u_interest[users], axis=1)
        topics = (cum < rng.random((n, 1)) * cum[:, -1:]).sum(axis=1)
        out = np.empty(n, dtype=np.int64)
        item_topics = world.i_topic.view[eligible]
        for topic in np.unique(topics):
            slots = np.flatnonzero(topics == topic)
            topic_pool = eligible[item_topics == topic]
            if len(topic_pool) == 0:
                topic_pool = eligible
            out[slots] = topic_pool[sample_weighted(rng, world.i_popularity.view[topic_pool] + 1.0, len(slots))]
        return out

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

    def _order(self, requests: Requests, candidates: Slates) -> Slates:
        """The feed seam: the hour's candidate slates in, the slates as shown (best first) out.

        Everything before this step is recall and everything after it is the world's response, so ``self.feed``
        (today :class:`LegacyFeed`) is the only part of an hour a different ranking policy replaces. A feed returns
        one slate per request with ``slate_size`` items, in request order; it may read the platform's observed
        counters but no hidden truth. Draws it takes from the run's generator shift every later draw.
        """
        return self.feed.order(requests, candidates)

    def _respond(self, requests: Requests, slates: Slates, pool: _Pool) -> Responses:
        """Clicks, conversions and dwell for every shown slot, drawn from the hidden truth."""
        slate = self.cfg.slate_size
        return self.world.respond(
            users=np.repeat(requests.user, slate),
            items=slates.items.ravel(),
            is_new_user=np.repeat(requests.is_new_user, slate),
            position=slates.position,
            eligible=pool.eligible,
        )

    def _observe(self, slates: Slates, responses: Responses, hour_start_us: int) -> None:
        """Update what the platform observes: exposure, click and early-exposure counters, decayed popularity."""
        world = self.world
        items = slates.items.ravel()
        np.add.at(world.i_exposures.view, items, 1)
        np.add.at(world.i_clicks.view, items, responses.click.astype(np.int64))
        np.add.at(world.i_popularity.view, items, responses.click.astype(np.float64))
        early = (hour_start_us - world.i_publish.view[items]) < DAY_US
        np.add.at(world.i_early.view, items[early], 1)
        world.i_popularity.view[:] *= self._decay

    def _log(
        self, day_index: int, requests: Requests, slates: Slates, responses: Responses
    ) -> tuple[pa.Table, pa.Table]:
        """The hour's ``impressions`` and ``impression_truth`` rows; request ids are unique across the run."""
        n_requests = len(requests.user)
        request_id = np.int64(day_index + 1) * 1_000_000_000 + self._next_request + np.arange(n_requests)
        self._next_request += n_requests
        return sim_tables.impression_tables(self.world, request_id, requests, slates, responses)
