"""The feed's side of a simulated hour: the requests it serves, the slates it orders, and today's legacy ordering.

:meth:`pipelines.data.simulator.Simulator._order` hands a feed the candidate slates of an hour's requests and
logs the slates in the order the feed returns. A feed sees only what the platform observes (the items' exposure
and click counters), never the world's hidden truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa

from pipelines.data.sim_world import World


@dataclass(frozen=True)
class Requests:
    """The feed requests of one hour, in time order."""

    user: np.ndarray  # [n_requests] user index
    time_us: np.ndarray  # [n_requests] request time, microseconds since the epoch
    is_new_user: np.ndarray  # [n_requests] bool: signed up less than new_user_days ago


@dataclass(frozen=True)
class Slates:
    """One slate per request: the items shown and the recall channel each came from."""

    items: np.ndarray  # [n_requests, slate_size] item index
    channel: np.ndarray  # [n_requests, slate_size] index into RECALL_CHANNELS

    @property
    def position(self) -> np.ndarray:
        """[n_requests * slate_size] int16: each flattened slot's position in its slate."""
        n_requests, slate_size = self.items.shape
        return np.tile(np.arange(slate_size, dtype=np.int16), n_requests)


class Feed(Protocol):
    """What decides what a simulated user sees. The simulator hands it, as a platform would see them, the items
    as they are published and the impressions as they are logged, and asks it to order each hour's candidates."""

    def order(self, requests: Requests, candidates: Slates) -> Slates:
        """The slates to show: ``slate_size`` items per request, chosen from its candidates, best first."""

    def published(self, publishes: pa.Table) -> None:
        """The day's publish events, each with the item as its author filed it (the ``items`` contract table:
        item, author, publish time, category, keywords, content vector); on the first day also the items
        published before the log starts."""

    def logged(self, impressions: pa.Table) -> None:
        """An hour's logged impressions (the ``impressions`` contract table), once the hour is over."""


class LegacyFeed:
    """Today's feed: orders each slate by its items' observed smoothed CTR plus Gumbel noise, keeps the top
    ``slate_size`` (all of them when recall gives exactly a slate, as it does by default)."""

    def __init__(self, world: World, rng: np.random.Generator) -> None:
        self._world = world
        self._rng = rng

    def order(self, requests: Requests, candidates: Slates) -> Slates:
        """The candidate slates reordered, best first; draws one Gumbel per slot from the run's generator."""
        items = candidates.items
        # The counters grow with the world, so they are read at call time, not kept.
        est_ctr = (self._world.i_clicks.view[items] + 1.0) / (self._world.i_exposures.view[items] + 20.0)
        score = np.log(est_ctr) + self._rng.gumbel(size=items.shape) * 0.5
        order = np.argsort(-score, axis=1, kind="stable")[:, : self._world.cfg.slate_size]
        return Slates(np.take_along_axis(items, order, axis=1), np.take_along_axis(candidates.channel, order, axis=1))

    def published(self, publishes: pa.Table) -> None:
        """Nothing to learn: the legacy feed reads the simulator's counters."""

    def logged(self, impressions: pa.Table) -> None:
        """Nothing to learn: the legacy feed reads the simulator's counters."""
