"""What each readout metric is: a ratio of two unit-level sums, per kind of randomization unit.

The unit comes from the assignments' ``unit_type``:

* ``user`` (a user split): the viewer. Impressions count for the viewer's bucket; publishing counts for the
  author (a user) in the author's own bucket. "Active" = the user viewed the feed or published that day.
* ``author`` (author splits): the author. Every consumer metric is defined on the impressions of the author's
  items with a denominator of the same kind (impressions, or the author's eligible days), never on the
  author's own days as a viewer: a CTR is clicks over impressions of the author's items, dwell is per
  impression of them. ``dau_rate`` stays, as the author's own activity (viewing or publishing).

Item metrics (time to first exposure, 24 h target, hot items, high/low exposure) count only *matured* items:
those whose follow-up window (``first_exposure_cap_hours``, 24 h, ``hot_days``, ``new_item_hours``) ends
before the end of the logs the readout may read (see ``ReadoutConfig.follow_up_days``). Time to first
exposure is a restricted mean: an item never exposed within the cap counts as the cap, so it is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Metric:
    """A ratio metric: ``numerator / denominator``, both summed over randomization units."""

    name: str
    side: str
    numerator: str
    denominator: str
    description: str


_AUTHOR_SIDE = (
    Metric("publish_penetration", "author", "publishing", "active",
           "publishing unit-days / daily active unit-days (active: viewed the feed or published)"),
    Metric("posts_per_dau", "author", "posts", "active", "items published / daily active unit-days"),
    Metric("hours_to_first_exposure", "author", "first_exposure_hours", "matured_first",
           "restricted mean hours from publishing to first impression, capped at first_exposure_cap_hours "
           "(never exposed counts as the cap), over items whose cap is observed"),
    Metric("target_reach_24h", "author", "target_reached", "matured_24h",
           "share of new items reaching the exposure target within 24 h, over items whose 24 h are observed"),
)  # fmt: skip
_NEW_ITEM_CONSUMER = (
    Metric("new_item_ctr_high", "consumer", "new_clicks_high", "new_imps_high", "CTR of high-exposure new items"),
    Metric("new_item_ctr_low", "consumer", "new_clicks_low", "new_imps_low", "CTR of low-exposure new items"),
    Metric("new_item_interaction_high", "consumer", "new_conv_high", "new_imps_high",
           "interaction (conversion) rate of high-exposure new items"),
    Metric("new_item_interaction_low", "consumer", "new_conv_low", "new_imps_low",
           "interaction (conversion) rate of low-exposure new items"),
)  # fmt: skip
_HOT = Metric(
    "hot_share", "content", "hot_items", "matured_hot",
    "share of new items with at least hot_clicks clicks within hot_days, over items whose hot_days are observed",
)  # fmt: skip

USER_UNIT_METRICS = (
    *_AUTHOR_SIDE,
    *_NEW_ITEM_CONSUMER,
    Metric("ctr", "consumer", "clicks", "impressions", "overall CTR"),
    Metric("dwell_per_dau", "consumer", "dwell", "active", "dwell seconds per daily active unit-day"),
    Metric("impressions_per_dau", "consumer", "impressions", "active", "impressions per daily active unit-day"),
    Metric("dau_rate", "consumer", "active", "eligible", "daily active unit-days per assigned unit-day"),
    _HOT,
)
AUTHOR_UNIT_METRICS = (
    *_AUTHOR_SIDE,
    *(replace(m, description=f"{m.description} (impressions of the author's items)") for m in _NEW_ITEM_CONSUMER),
    Metric("ctr", "consumer", "clicks", "impressions", "CTR of the author's items"),
    Metric("dwell_per_impression", "consumer", "dwell", "impressions",
           "dwell seconds per impression of the author's items"),
    Metric("impressions_per_author_day", "author", "impressions", "eligible",
           "impressions of the author's items per eligible author-day"),
    Metric("dau_rate", "author", "active", "eligible",
           "authors active (viewing or publishing) per eligible author-day"),
    _HOT,
)  # fmt: skip
METRICS_BY_UNIT = {"user": USER_UNIT_METRICS, "author": AUTHOR_UNIT_METRICS}
METRIC_NAMES = frozenset(m.name for family in METRICS_BY_UNIT.values() for m in family)


def metrics_for(unit_type: str) -> tuple[Metric, ...]:
    """The metric family of a randomization unit (``user`` or ``author``).

    Raises:
        ValueError: for any other unit type.
    """
    try:
        return METRICS_BY_UNIT[unit_type]
    except KeyError:
        raise ValueError(f"unit type {unit_type!r} has no metric family; expected {sorted(METRICS_BY_UNIT)}") from None


def columns(metrics: tuple[Metric, ...]) -> list[str]:
    """The unit-day columns the metrics read, sorted."""
    return sorted({c for m in metrics for c in (m.numerator, m.denominator)})
