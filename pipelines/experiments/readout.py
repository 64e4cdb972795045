"""Read out a cold-start experiment: metrics per bucket, per day and over the window, with statistics."""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import time
from dataclasses import dataclass

from pipelines.data.contract import Store
from pipelines.experiments.metrics import METRICS, ReadoutConfig, build_unit_days, daily_moments, unit_arrays
from pipelines.experiments.metrics import window_moments as _window_moments
from pipelines.experiments.stats import Moments, bootstrap_diff_ci, compare, sample_ratio_check

log = logging.getLogger(__name__)

WARNINGS = {
    "user_split": (
        "User split: treatment users' feeds boost new items from every author, so control authors' items get "
        "extra exposure too and the new-item pool is shared by both groups. Author-side metrics mix both groups' "
        "traffic and understate the effect of boosting everyone; read them from an author split."
    ),
    "author_split": (
        "Author split: treatment authors' new items take feed slots from control authors' items in the same feeds "
        "(competition for exposure), so control is not an untouched baseline and the lift overstates what a "
        "boost for all authors would give. Consumer-side metrics here are per author bucket, not per viewer."
    ),
}


def readout(
    store: Store,
    start: dt.date,
    end: dt.date,
    cfg: ReadoutConfig | None = None,
    treatment_share: float = 0.5,
    bootstrap_metrics: tuple[str, ...] = ("ctr", "posts_per_dau"),
    bootstrap_max_units: int = 200_000,
) -> dict:
    """Compute every metric per bucket over [start, end] and per day, treatment vs control.

    Returns:
        A JSON-ready dict: design, warning, SRM check, window comparisons (with a bootstrap CI for
        ``bootstrap_metrics`` when there are at most ``bootstrap_max_units`` units), daily comparisons.
    """
    cfg = cfg or ReadoutConfig()
    started = time.perf_counter()
    tallies = _tally(store, start, end, cfg, bootstrap_metrics, bootstrap_max_units)
    if set(tallies.window) != {"control", "treatment"}:
        raise ValueError(f"expected buckets control and treatment, found {sorted(tallies.window)}")
    metrics = _window_comparisons(tallies.window, tallies.arrays, cfg.alpha)
    days = _daily_comparisons(tallies.daily, cfg.alpha)
    srm = sample_ratio_check(tallies.counts, {"control": 1 - treatment_share, "treatment": treatment_share})
    seconds = time.perf_counter() - started
    log.info("readout of %s %s..%s in %.1fs", cfg.experiment_id, start, end, seconds)
    return {
        "experiment_id": cfg.experiment_id,
        "dataset": store.dataset,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "design": tallies.design,
        "warning": WARNINGS[tallies.design],
        "config": cfg.model_dump(),
        "srm": {**srm.__dict__},
        "metrics": metrics,
        "daily": days,
        "seconds": seconds,
    }


@dataclass(frozen=True)
class _Tallies:
    """What the readout reads from the logs: the design and the per-bucket sums the statistics need."""

    design: str
    window: dict[str, dict[str, Moments]]  # bucket -> metric -> moments over the window
    daily: dict[str, dict[str, dict[str, Moments]]]  # day -> bucket -> metric -> moments
    counts: dict[str, int]  # bucket -> units with any unit-day
    arrays: dict[str, dict[str, tuple]]  # metric -> bucket -> unit-level (y, x), for the bootstrap check


def _tally(
    store: Store,
    start: dt.date,
    end: dt.date,
    cfg: ReadoutConfig,
    bootstrap_metrics: tuple[str, ...],
    bootstrap_max_units: int,
) -> _Tallies:
    """Build the unit-days of [start, end] in a spilling DuckDB and sum them per bucket, per day and per unit."""
    import duckdb

    with tempfile.TemporaryDirectory(prefix="duckdb-ab-") as spill:
        con = duckdb.connect()
        con.execute(f"SET memory_limit = '{cfg.memory_limit}'")
        con.execute(f"SET temp_directory = '{spill}'")
        con.execute("SET TimeZone = 'UTC'")
        design = build_unit_days(con, store, start, end, cfg)
        window = _window_moments(con, start, end)
        daily = daily_moments(con)
        counts = dict(con.execute("SELECT bucket, count(DISTINCT unit) FROM unit_days GROUP BY bucket").fetchall())
        arrays = {}
        if sum(counts.values()) <= bootstrap_max_units:
            arrays = {name: unit_arrays(con, next(m for m in METRICS if m.name == name)) for name in bootstrap_metrics}
        con.close()
    return _Tallies(design, window, daily, counts, arrays)


def _window_comparisons(
    window: dict[str, dict[str, Moments]], arrays: dict[str, dict[str, tuple]], alpha: float
) -> dict[str, dict]:
    """metric -> treatment vs control over the window, with a bootstrap CI where unit arrays were read."""
    metrics = {}
    for metric in METRICS:
        result = compare(window["control"][metric.name], window["treatment"][metric.name], alpha).to_dict()
        result |= {"side": metric.side, "description": metric.description}
        if metric.name in arrays and {"control", "treatment"} <= set(arrays[metric.name]):
            (yc, xc), (yt, xt) = arrays[metric.name]["control"], arrays[metric.name]["treatment"]
            result["bootstrap_diff_ci"] = bootstrap_diff_ci(yc, xc, yt, xt, alpha, n_resamples=500)
        metrics[metric.name] = result
    return metrics


def _daily_comparisons(daily: dict[str, dict[str, dict[str, Moments]]], alpha: float) -> dict[str, dict]:
    """day -> metric -> treatment vs control, for the days on which both buckets have unit-days."""
    return {
        day: {
            m.name: compare(buckets["control"][m.name], buckets["treatment"][m.name], alpha).to_dict() for m in METRICS
        }
        for day, buckets in sorted(daily.items())
        if {"control", "treatment"} <= set(buckets)
    }
