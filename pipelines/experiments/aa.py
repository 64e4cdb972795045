"""A/A checks: how often the readout's tests reject when there is nothing to find.

An A/A run gives both buckets the same policy; relabelling the units of one run at random is one more A/A (the
new buckets are exchangeable whatever the run did). Over many runs, the share of single tests rejected at alpha
should be about alpha, and the share of runs with any rejection in the family (the family-wise error) at most
alpha after Holm. Every figure comes with a Wilson interval (``scipy.stats.binomtest``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
from scipy import stats

from pipelines.experiments.correction import Method, adjust
from pipelines.experiments.cuped import Covariate, compare_with_cuped
from pipelines.experiments.stats import Moments, permutation_p_value


def _bucket_sums(mask: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """[n_runs, 6]: n, Σx, Σy, Σx², Σy², Σxy of the units in each run's bucket (``mask`` [n_runs, n_units], 0/1)."""
    return np.stack([mask @ (x > 0), mask @ x, mask @ y, mask @ (x * x), mask @ (y * y), mask @ (x * y)], axis=1)


def _cross_sums(mask: np.ndarray, y: np.ndarray, x: np.ndarray, py: np.ndarray, px: np.ndarray) -> np.ndarray:
    return np.stack([mask @ (y * py), mask @ (y * px), mask @ (x * py), mask @ (x * px)], axis=1)


def _column(units: pa.Table, name: str) -> np.ndarray:
    return units.column(name).to_numpy(zero_copy_only=False).astype(float)


def relabelled(
    units: pa.Table,
    n_runs: int,
    seed: int,
    share: float = 0.5,
    cuped: bool = False,
    alpha: float = 0.05,
    permutation_below_units: int = 0,
    permutation_resamples: int = 2000,
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Every metric compared over ``n_runs`` random relabellings of the units of :func:`.readout.unit_sums`,
    through the readout's own statistics (:func:`.cuped.compare_with_cuped`, and its permutation p-value where
    a bucket has fewer than ``permutation_below_units`` units with a denominator).

    Returns:
        (metric names, {"p_value", "diff", "se"}: arrays [n_runs, n_metrics]; NaN where a bucket has no data).
    """
    names = [c[: -len("__y")] for c in units.column_names if c.endswith("__y")]
    treated = np.random.default_rng(seed).random((n_runs, units.num_rows)) < share
    masks = {"c": (~treated).astype(float), "t": treated.astype(float)}
    z = stats.norm.ppf(1 - alpha / 2)
    out = {k: np.full((n_runs, len(names)), np.nan) for k in ("p_value", "diff", "se")}
    for j, name in enumerate(names):
        y, x = _column(units, f"{name}__y"), _column(units, f"{name}__x")
        sums = {b: _bucket_sums(m, y, x) for b, m in masks.items()}
        if cuped:
            py, px = _column(units, f"{name}__py"), _column(units, f"{name}__px")
            pre = {b: (_bucket_sums(m, py, px), _cross_sums(m, y, x, py, px)) for b, m in masks.items()}
        for run in range(n_runs):
            covs = [Covariate(Moments(*pre[b][0][run]), *pre[b][1][run]) if cuped else None for b in ("c", "t")]
            c, _ = compare_with_cuped(Moments(*sums["c"][run]), Moments(*sums["t"][run]), *covs, alpha)
            out["p_value"][run, j], out["diff"][run, j] = c.p_value, c.diff
            if 2 <= min(sums["c"][run][0], sums["t"][run][0]) < permutation_below_units and np.isfinite(c.p_value):
                has = x > 0
                kept = [(y[has & (treated[run] == arm)], x[has & (treated[run] == arm)]) for arm in (False, True)]
                out["p_value"][run, j] = permutation_p_value(*kept[0], *kept[1], permutation_resamples, seed + run)
            out["se"][run, j] = (c.diff_ci[1] - c.diff_ci[0]) / (2 * z)
    return names, out


@dataclass(frozen=True)
class Rate:
    """k of n, with a Wilson interval."""

    k: int
    n: int
    share: float
    low: float
    high: float

    def to_dict(self) -> dict:
        return asdict(self)


def rate(k: int, n: int, confidence: float = 0.95) -> Rate:
    """``k / n`` with its Wilson score interval."""
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return Rate(k, n, k / n if n else float("nan"), float(ci.low), float(ci.high))


def false_positive_rates(p_values: np.ndarray, alpha: float = 0.05, method: Method = "holm") -> dict[str, Rate]:
    """Per-test rejections before correction, and runs with any rejection before and after correction.

    Args:
        p_values: [n_runs, n_tests]; NaN marks a test a run could not make.
    """
    tested = np.isfinite(p_values)
    adjusted = np.vstack([adjust(row, method) for row in p_values])
    raw_reject = (p_values < alpha) & tested
    return {
        "per_test": rate(int(raw_reject.sum()), int(tested.sum())),
        "familywise_uncorrected": rate(int(raw_reject.any(axis=1).sum()), len(p_values)),
        "familywise_corrected": rate(int(((adjusted < alpha) & tested).any(axis=1).sum()), len(p_values)),
    }
