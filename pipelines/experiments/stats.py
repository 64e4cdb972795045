"""Statistics for ratio metrics of randomized experiments: delta method, bootstrap check, SRM.

Multiple-testing correction is in :mod:`.correction`, CUPED in :mod:`.cuped`, censored time-to-event in
:mod:`.survival`.

A metric is a ratio of sums over randomization units, ``R = sum(Y) / sum(X)`` (e.g. clicks / impressions
with the user as unit). Units are independent; the rows of one unit are not, which is why the variance is
taken over units. With unit sums ``y_i, x_i`` the delta method gives (Deng et al., "Applying the Delta Method
in Metric Analytics", KDD 2018)

    Var(R) ≈ (S_yy - 2 R S_xy + R² S_xx) / S_x²,

where ``S_x = Σ x_i``, ``S_xx = Σ x_i²``, ``S_xy = Σ x_i y_i`` and so on: units with ``x = y = 0`` add nothing,
so the moments can be summed in SQL over the units that have rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Moments:
    """Sums over units of one bucket: n, Σx, Σy, Σx², Σy², Σxy."""

    n: float
    sx: float
    sy: float
    sxx: float
    syy: float
    sxy: float

    @property
    def ratio(self) -> float:
        return self.sy / self.sx if self.sx else float("nan")

    @property
    def variance(self) -> float:
        """Delta-method variance of the ratio."""
        if not self.sx:
            return float("nan")
        r = self.ratio
        return max(self.syy - 2 * r * self.sxy + r * r * self.sxx, 0.0) / (self.sx * self.sx)


@dataclass(frozen=True)
class Comparison:
    """Treatment vs control for one metric."""

    control: float
    treatment: float
    diff: float
    diff_ci: tuple[float, float]
    rel_diff: float
    rel_ci: tuple[float, float]
    p_value: float
    significant: bool
    n_control: float
    n_treatment: float

    def to_dict(self) -> dict:
        return asdict(self)


def compare(control: Moments, treatment: Moments, alpha: float = 0.05) -> Comparison:
    """Absolute and relative difference with delta-method confidence intervals and a two-sided z-test."""
    return compare_estimates(
        control.ratio, control.variance, treatment.ratio, treatment.variance, control.n, treatment.n, alpha
    )


def compare_estimates(
    rc: float, vc: float, rt: float, vt: float, n_control: float, n_treatment: float, alpha: float = 0.05
) -> Comparison:
    """Treatment vs control from each bucket's estimate and its variance (independent buckets)."""
    z = stats.norm.ppf(1 - alpha / 2)
    diff = rt - rc
    se = np.sqrt(vc + vt)
    rel = rt / rc - 1 if rc else float("nan")
    # Var(rt/rc) ≈ vt/rc² + rt² vc / rc⁴ (independent buckets).
    se_rel = np.sqrt(vt / rc**2 + rt**2 * vc / rc**4) if rc else float("nan")
    if not np.isfinite(diff) or not np.isfinite(se) or (se == 0 and diff == 0):
        p = float("nan")  # a bucket without any denominator, or nothing varies: nothing to test
    elif se > 0:
        p = float(2 * stats.norm.sf(abs(diff) / se))
    else:
        p = 0.0
    return Comparison(
        control=rc,
        treatment=rt,
        diff=diff,
        diff_ci=(diff - z * se, diff + z * se),
        rel_diff=rel,
        rel_ci=(rel - z * se_rel, rel + z * se_rel),
        p_value=p,
        significant=bool(p < alpha),
        n_control=n_control,
        n_treatment=n_treatment,
    )


def moments(y: np.ndarray, x: np.ndarray) -> Moments:
    """Moments of unit-level arrays (used by tests and the bootstrap check)."""
    y, x = np.asarray(y, float), np.asarray(x, float)
    return Moments(len(y), x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum())


def bootstrap_diff_ci(
    y_control: np.ndarray,
    x_control: np.ndarray,
    y_treatment: np.ndarray,
    x_treatment: np.ndarray,
    alpha: float = 0.05,
    n_resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``R_t - R_c``, resampling units within each bucket (scipy.stats.bootstrap)."""
    yc, xc, yt, xt = (np.asarray(a, float) for a in (y_control, x_control, y_treatment, x_treatment))

    def statistic(ic: np.ndarray, it: np.ndarray, axis: int = -1) -> np.ndarray:
        ic, it = ic.astype(int), it.astype(int)
        return yt[it].sum(axis) / xt[it].sum(axis) - yc[ic].sum(axis) / xc[ic].sum(axis)

    result = stats.bootstrap(
        (np.arange(len(yc)), np.arange(len(yt))),
        statistic,
        n_resamples=n_resamples,
        confidence_level=1 - alpha,
        method="percentile",
        vectorized=True,
        batch=max(1, min(n_resamples, 2_000_000 // max(len(yc) + len(yt), 1))),
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def permutation_p_value(
    y_control: np.ndarray,
    x_control: np.ndarray,
    y_treatment: np.ndarray,
    x_treatment: np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
) -> float:
    """Two-sided permutation p-value of ``R_t - R_c``, the units' bucket labels shuffled
    (scipy.stats.permutation_test). Exact under the null that the bucket changes nothing, whatever the units'
    distribution: what a ratio of few, skewed units needs where the delta method's normal approximation is
    optimistic."""
    y = np.concatenate([np.asarray(y_control, float), np.asarray(y_treatment, float)])
    x = np.concatenate([np.asarray(x_control, float), np.asarray(x_treatment, float)])
    n_control = len(y_control)

    def statistic(ic: np.ndarray, it: np.ndarray, axis: int = -1) -> np.ndarray:
        ic, it = ic.astype(int), it.astype(int)
        with np.errstate(invalid="ignore", divide="ignore"):
            return y[it].sum(axis) / x[it].sum(axis) - y[ic].sum(axis) / x[ic].sum(axis)

    result = stats.permutation_test(
        (np.arange(n_control), np.arange(n_control, len(y))),
        statistic,
        permutation_type="independent",
        vectorized=True,
        n_resamples=n_resamples,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(result.pvalue)


@dataclass(frozen=True)
class SampleRatioCheck:
    """Chi-square test of the assigned units per bucket against the designed split."""

    counts: dict[str, int]
    expected_share: dict[str, float]
    p_value: float
    mismatch: bool


def sample_ratio_check(
    counts: dict[str, int], expected_share: dict[str, float], threshold: float = 0.001
) -> SampleRatioCheck:
    """Flag a sample-ratio mismatch when the chi-square p-value is below ``threshold`` (0.001 is customary)."""
    buckets = sorted(expected_share)
    observed = np.array([counts.get(b, 0) for b in buckets], float)
    expected = np.array([expected_share[b] for b in buckets]) * observed.sum()
    p = float(stats.chisquare(observed, expected).pvalue) if observed.sum() else 1.0
    return SampleRatioCheck({b: int(counts.get(b, 0)) for b in buckets}, expected_share, p, p < threshold)
