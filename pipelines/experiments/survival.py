"""Time to a new item's first exposure with never-exposed items kept as right-censored observations.

An item exposed during the follow-up has an event at its time to first exposure; an item not exposed by the
end of the logs read is censored at the time it was followed. The Kaplan-Meier estimator (computed here from
counts per distinct time, so that SQL can hand over one row per time, not per item) gives the median time to
first exposure, the restricted mean up to a cap (the area under the survival curve), and the share of items
still unexposed at the cap. Items are treated as independent: these figures are descriptive; the tested
metric is the restricted mean over matured items (``hours_to_first_exposure``), whose variance is taken over
randomization units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def kaplan_meier(times: np.ndarray, events: np.ndarray, censored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Survival just after each distinct time, from per-time counts of events and censorings.

    Args:
        times: distinct observation times, any order.
        events: items first exposed at each time.
        censored: items censored at each time (at risk at that time, as is customary).

    Returns:
        (sorted times, survival just after each of them).
    """
    order = np.argsort(times, kind="stable")
    t = np.asarray(times, float)[order]
    d = np.asarray(events, float)[order]
    c = np.asarray(censored, float)[order]
    at_risk = (d + c).sum() - np.concatenate([[0.0], np.cumsum(d + c)[:-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(at_risk > 0, 1.0 - d / at_risk, 1.0)
    return t, np.cumprod(factor)


@dataclass(frozen=True)
class FirstExposure:
    """Kaplan-Meier figures of one bucket's time to first exposure, in hours."""

    items: int
    exposed: int
    never_exposed: int  # censored: not exposed by the end of the logs read
    median_hours: float | None  # None while more than half are still unexposed
    restricted_mean_hours: float | None  # area under the curve up to the cap; None if the cap is not reached
    share_unexposed_at_cap: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def first_exposure(times: np.ndarray, events: np.ndarray, censored: np.ndarray, cap: float) -> FirstExposure:
    """Median, restricted mean up to ``cap`` and share still unexposed at ``cap``, by Kaplan-Meier."""
    n_events, n_censored = int(np.sum(events)), int(np.sum(censored))
    if n_events + n_censored == 0:
        return FirstExposure(0, 0, 0, None, None, None)
    t, surv = kaplan_meier(times, events, censored)
    below = np.flatnonzero(surv <= 0.5)
    median = float(t[below[0]]) if len(below) else None
    if t.max() < cap and surv[-1] > 0:  # the curve is unknown beyond the longest follow-up
        return FirstExposure(n_events + n_censored, n_events, n_censored, median, None, None)
    inside = t < cap
    steps = np.concatenate([[0.0], t[inside], [cap]])
    heights = np.concatenate([[1.0], surv[inside]])
    area = float(np.sum(np.diff(steps) * heights))
    at_cap = float(surv[t <= cap][-1]) if (t <= cap).any() else 1.0
    return FirstExposure(n_events + n_censored, n_events, n_censored, median, area, at_cap)
