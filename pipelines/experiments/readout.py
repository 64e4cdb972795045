"""Read out a cold-start experiment: metrics per bucket over the window and per day, with statistics.

Window-level metrics are the tested family: each has a role (primary, guardrail, secondary; from
:class:`ReadoutConfig`) and a p-value adjusted over the family (Holm by default, Benjamini-Hochberg as an
option); ``significant`` is decided on the adjusted p-value. Daily lifts are descriptive (no significance)
unless ``correct_daily``. The sample-ratio check counts assigned units. New items are followed up only where
their windows are observed, with the matured counts per bucket.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipelines.data.contract import Store
from pipelines.experiments import aggregates
from pipelines.experiments.config import ReadoutConfig
from pipelines.experiments.correction import adjust
from pipelines.experiments.cuped import Covariate, compare_with_cuped
from pipelines.experiments.definitions import Metric
from pipelines.experiments.design import design_warning, warning_text
from pipelines.experiments.metrics import build_unit_days, create_units, drop_intermediates, observed_until
from pipelines.experiments.stats import (
    Moments,
    bootstrap_diff_ci,
    compare,
    permutation_p_value,
    sample_ratio_check,
)
from pipelines.experiments.survival import first_exposure

log = logging.getLogger(__name__)
BUCKETS = ("control", "treatment")


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
        A JSON-ready dict: design and its four questions answered, SRM check on assigned units, window
        comparisons with roles and adjusted p-values (a bootstrap CI for ``bootstrap_metrics`` when there are at
        most ``bootstrap_max_units`` units), the new items' follow-up per bucket, descriptive daily comparisons.

    Raises:
        ValueError: when the buckets are not control and treatment (and a balanced author split's holdout).
    """
    cfg = cfg or ReadoutConfig()
    started = time.perf_counter()
    t = _tally(store, start, end, cfg, bootstrap_max_units)
    assigned_shares = design_shares(t.design, treatment_share)
    found = set(t.window) | set(t.assigned)
    if not set(BUCKETS) <= set(t.window) or not found <= set(assigned_shares):
        raise ValueError(f"design {t.design!r} compares control and treatment (buckets {sorted(assigned_shares)}), "
                         f"found {sorted(found)}")  # fmt: skip
    metrics = _window_comparisons(t, cfg, bootstrap_metrics)
    correction = _correct_window(metrics, cfg)
    srm = sample_ratio_check(t.assigned, assigned_shares, cfg.srm_threshold)
    shares = {b: t.totals.get(b, {}).get("new_imps", 0) / max(t.totals.get(b, {}).get("impressions", 0), 1)
              for b in BUCKETS}  # fmt: skip
    questions = design_warning(t.design, treatment_share, shares)
    seconds = time.perf_counter() - started
    log.info("readout of %s %s..%s in %.1fs", cfg.experiment_id, start, end, seconds)
    return {
        "experiment_id": cfg.experiment_id,
        "dataset": store.dataset,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "observed_until": t.observed.isoformat(),
        "design": t.design,
        "unit_type": t.unit_type,
        "design_questions": questions,
        "warning": warning_text(questions),
        "config": cfg.model_dump(mode="json"),
        "srm": {
            **srm.__dict__,
            "counted": "assigned units",
            "active_units": {b: t.totals.get(b, {}).get("active_units", 0) for b in BUCKETS},
        },
        "correction": correction,
        "metrics": metrics,
        "items": _items(t, cfg),
        "new_item_impression_share": shares,
        "daily": _daily_comparisons(t.daily, t.metrics, cfg),
        "seconds": seconds,
    }


def design_shares(design: str, treatment_share: float) -> dict[str, float]:
    """bucket -> share of units assigned to it: a balanced author split has control and treatment groups of
    ``treatment_share`` each and holds the rest out (served as control, not compared); other designs split
    control and treatment."""
    if design != "balanced_author_split":
        return {"control": 1 - treatment_share, "treatment": treatment_share}
    held_out = 1 - 2 * treatment_share
    return {"control": treatment_share, "treatment": treatment_share} | ({"holdout": held_out} if held_out > 0 else {})


@dataclass(frozen=True)
class _Tallies:
    """What the readout reads from the logs: the design and the per-bucket sums the statistics need."""

    design: str
    unit_type: str
    metrics: tuple[Metric, ...]  # the family of the unit type
    observed: dt.date  # the last day item follow-ups read
    window: dict[str, dict[str, Moments]]  # bucket -> metric -> moments over the window
    covariates: dict[str, dict[str, Covariate]]  # bucket -> metric -> CUPED covariate (empty without CUPED)
    daily: dict[str, dict[str, dict[str, Moments]]]  # day -> bucket -> metric -> moments
    assigned: dict[str, int]  # bucket -> assigned units (the SRM test's counts)
    totals: dict[str, dict[str, float]]  # bucket -> active units, impressions, new-item impressions
    items: dict[str, dict[str, int]]  # bucket -> new-item counts (published, matured per window)
    curves: dict[str, tuple[list, list, list]]  # bucket -> time to first exposure: times, events, censored
    arrays: dict[str, dict[str, tuple]]  # metric -> bucket -> unit-level (y, x), for the bootstrap check


@contextlib.contextmanager
def _built(store: Store, start: dt.date, end: dt.date, cfg: ReadoutConfig) -> Iterator[tuple]:
    """A spilling DuckDB with ``units``, ``unit_days`` (and ``pre_unit_days`` with CUPED) built.

    Yields:
        (connection, design, unit type, metric family, observed-until day).
    """
    import duckdb

    with tempfile.TemporaryDirectory(prefix="duckdb-ab-") as spill:
        con = duckdb.connect()
        try:
            con.execute(f"SET memory_limit = '{cfg.memory_limit}'")
            con.execute(f"SET temp_directory = '{spill}'")
            con.execute("SET TimeZone = 'UTC'")
            design, unit_type = create_units(con, store, end, cfg)
            if cfg.cuped_pre_days:  # follow-ups stop at the pre-period's end: the window is treated
                pre_end = start - dt.timedelta(days=1)
                pre_start = start - dt.timedelta(days=cfg.cuped_pre_days)
                build_unit_days(con, store, unit_type, pre_start, pre_end, cfg, pre_end, "pre_unit_days")
                drop_intermediates(con)
            observed = observed_until(store, end, cfg)
            family = build_unit_days(con, store, unit_type, start, end, cfg, observed)
            yield con, design, unit_type, family, observed
        finally:
            con.close()


def _tally(
    store: Store,
    start: dt.date,
    end: dt.date,
    cfg: ReadoutConfig,
    bootstrap_max_units: int,
) -> _Tallies:
    """Build the unit-days of [start, end] and sum them per bucket, per day, per item and (bootstrap) per unit."""
    with _built(store, start, end, cfg) as (con, design, unit_type, family, observed):
        window, covariates = aggregates.window_moments(con, family, start, end, cfg.cuped_pre_days)
        daily = aggregates.daily_moments(con, family)
        assigned = aggregates.assigned_units(con, end)
        items, curves = aggregates.item_followup(con)
        arrays = {}
        if sum(assigned.values()) <= bootstrap_max_units:  # unit-level: the bootstrap and permutation tests
            arrays = _bucket_arrays(aggregates.unit_table(con, family, start, end), family)
        totals = aggregates.bucket_totals(con)
    return _Tallies(design, unit_type, family, observed, window, covariates, daily, assigned, totals, items, curves,
                    arrays)  # fmt: skip


def unit_sums(store: Store, start: dt.date, end: dt.date, cfg: ReadoutConfig | None = None) -> pa.Table:
    """Per assigned unit: bucket and each metric's window sums (and pre-period sums with CUPED).

    For checks that need unit-level data (bootstrap, A/A by relabelling units); unit-sized, so keep it small.
    """
    cfg = cfg or ReadoutConfig()
    with _built(store, start, end, cfg) as (con, _, _, family, _):
        return aggregates.unit_table(con, family, start, end, cfg.cuped_pre_days)


def _bucket_arrays(table: pa.Table, metrics: tuple[Metric, ...]) -> dict[str, dict[str, tuple]]:
    """metric -> bucket -> (y, x) of the units with x > 0."""
    bucket = np.asarray(table["bucket"].to_pylist(), dtype=object)
    out: dict[str, dict[str, tuple]] = {}
    for m in metrics:
        y = table[f"{m.name}__y"].to_numpy(zero_copy_only=False).astype(float)
        x = table[f"{m.name}__x"].to_numpy(zero_copy_only=False).astype(float)
        for b in BUCKETS:
            keep = (bucket == b) & (np.nan_to_num(x) > 0)
            out.setdefault(m.name, {})[b] = (np.nan_to_num(y[keep]), x[keep])
    return out


def _window_comparisons(t: _Tallies, cfg: ReadoutConfig, bootstrap_metrics: tuple[str, ...]) -> dict[str, dict]:
    """metric -> treatment vs control over the window (CUPED-adjusted where covariates exist); a bootstrap CI for
    ``bootstrap_metrics``; a permutation p-value where either bucket has fewer than
    ``cfg.permutation_below_units`` units (its interval stays the delta method's)."""
    metrics = {}
    for metric in t.metrics:
        name = metric.name
        covs = [t.covariates.get(b, {}).get(name) for b in BUCKETS]
        comparison, cuped = compare_with_cuped(t.window["control"][name], t.window["treatment"][name], *covs,
                                               cfg.alpha)  # fmt: skip
        result = comparison.to_dict() | {"side": metric.side, "description": metric.description, "cuped": cuped}
        result["denominators"] = {b: t.window[b][name].sx for b in BUCKETS}
        result["test"] = "delta"
        arrays = t.arrays.get(name, {})
        if all(len(arrays.get(b, ((), ()))[1]) for b in BUCKETS):
            (yc, xc), (yt, xt) = arrays["control"], arrays["treatment"]
            if name in bootstrap_metrics:
                result["bootstrap_diff_ci"] = bootstrap_diff_ci(yc, xc, yt, xt, cfg.alpha, n_resamples=500)
            if 2 <= min(len(xc), len(xt)) < cfg.permutation_below_units and math.isfinite(result["p_value"]):
                result["p_value"] = permutation_p_value(yc, xc, yt, xt, cfg.permutation_resamples)
                result["test"] = "permutation"
                result["significant"] = bool(result["p_value"] < cfg.alpha)
        metrics[name] = result
    return metrics


def _role(name: str, cfg: ReadoutConfig) -> str:
    return "primary" if name in cfg.primary else "guardrail" if name in cfg.guardrails else "secondary"


def _correct_window(metrics: dict[str, dict], cfg: ReadoutConfig) -> dict:
    """Set each metric's role, family membership, adjusted p-value and significance; returns the family."""
    for name, m in metrics.items():
        m["role"] = _role(name, cfg)
        m["in_family"] = cfg.family == "all" or m["role"] != "secondary"
    family = [n for n, m in metrics.items() if m["in_family"] and math.isfinite(m["p_value"])]
    adjusted = dict(zip(family, adjust([metrics[n]["p_value"] for n in family], cfg.correction), strict=True))
    for name, m in metrics.items():
        m["p_adjusted"] = float(adjusted.get(name, math.nan))
        m["significant"] = bool(name in adjusted and adjusted[name] < cfg.alpha)
    return {"method": cfg.correction, "alpha": cfg.alpha, "family": family,
            "daily": cfg.correction if cfg.correct_daily else "descriptive"}  # fmt: skip


def _daily_comparisons(
    daily: dict[str, dict[str, dict[str, Moments]]], metrics: tuple[Metric, ...], cfg: ReadoutConfig
) -> dict[str, dict]:
    """day -> metric -> treatment vs control on days both buckets have unit-days; descriptive unless corrected."""
    out = {
        day: {m.name: compare(buckets["control"][m.name], buckets["treatment"][m.name], cfg.alpha).to_dict()
              for m in metrics}
        for day, buckets in sorted(daily.items())
        if set(BUCKETS) <= set(buckets)
    }  # fmt: skip
    tests = [r for day in out.values() for r in day.values()]
    adjusted = adjust([r["p_value"] for r in tests], cfg.correction) if cfg.correct_daily else [math.nan] * len(tests)
    for r, p in zip(tests, adjusted, strict=True):
        r["p_adjusted"] = float(p) if cfg.correct_daily else None
        r["significant"] = bool(p < cfg.alpha) if cfg.correct_daily else None
        r["descriptive"] = not cfg.correct_daily
    return out


def _items(t: _Tallies, cfg: ReadoutConfig) -> dict[str, dict]:
    """bucket -> new items published and matured per window, target reach, hot share, first exposure (KM)."""
    out = {}
    for bucket in BUCKETS:
        counts = t.items.get(bucket, {})
        reach, hot = t.window[bucket]["target_reach_24h"], t.window[bucket]["hot_share"]
        times, events, censored = t.curves.get(bucket, ([], [], []))
        out[bucket] = {
            **counts,
            "target_reached": int(reach.sy),
            "target_reach_24h": reach.ratio,
            "restricted_mean_hours": t.window[bucket]["hours_to_first_exposure"].ratio,
            "hot_items": int(hot.sy),
            "hot_share": hot.ratio,
            "first_exposure": first_exposure(times, events, censored, cfg.first_exposure_cap_hours).to_dict(),
        }
    return out
