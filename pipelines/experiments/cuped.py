"""CUPED for ratio metrics: the same metric in a pre-period as covariate, through the delta method.

CUPED (Deng, Xu, Kohavi, Walker, "Improving the Sensitivity of Online Controlled Experiments by Utilizing
Pre-Experiment Data", WSDM 2013) subtracts from each bucket's estimate the part a pre-treatment covariate
predicts. For a ratio ``R = ΣY / ΣX`` with the same ratio ``R' = ΣY' / ΣX'`` over the pre-period days of the
same units (Deng et al., KDD 2018, section on CUPED for ratio metrics), each bucket's estimate becomes

    R_cv = R - θ (R' - R'_pooled),

with delta-method (co)variances over units from their sums
``Var(R) = Σ(y - R x)² / S_x²``, ``Var(R') = Σ(y' - R' x')² / S_x'²``,
``Cov(R, R') = Σ(y - R x)(y' - R' x') / (S_x S_x')``, and one θ for both buckets, the one that minimises the
variance of the difference: ``θ = (Cov_c + Cov_t) / (Var'_c + Var'_t)``. Then
``Var(R_cv) = Var(R) - 2θ Cov(R, R') + θ² Var(R')``. The pre-period is untouched by the treatment, so
``R'_t - R'_c`` has mean zero and the difference stays unbiased; the variance shrinks by about ``ρ²``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.experiments.stats import Comparison, Moments, compare, compare_estimates, moments


@dataclass(frozen=True)
class Covariate:
    """A bucket's pre-period moments of a metric and the cross sums with its window sums over the same units."""

    pre: Moments  # n, Σx', Σy', Σx'², Σy'², Σx'y'
    y_py: float  # Σ y y'
    y_px: float  # Σ y x'
    x_py: float  # Σ x y'
    x_px: float  # Σ x x'

    def cov(self, window: Moments) -> float:
        """Delta-method covariance of the window ratio with the pre-period ratio."""
        r, rp = window.ratio, self.pre.ratio
        cross = self.y_py - rp * self.y_px - r * self.x_py + r * rp * self.x_px
        return cross / (window.sx * self.pre.sx)


def covariate(y: np.ndarray, x: np.ndarray, y_pre: np.ndarray, x_pre: np.ndarray) -> Covariate:
    """The covariate sums of unit-level arrays (tests and relabelled A/A runs)."""
    y, x, yp, xp = (np.asarray(a, float) for a in (y, x, y_pre, x_pre))
    return Covariate(moments(yp, xp), (y * yp).sum(), (y * xp).sum(), (x * yp).sum(), (x * xp).sum())


@dataclass(frozen=True)
class CupedResult:
    """The adjusted comparison, θ, and the variance of the difference after / before (about 1 - ρ²)."""

    comparison: Comparison
    theta: float
    variance_ratio: float


def cuped_compare(
    control: Moments, treatment: Moments, cov_control: Covariate, cov_treatment: Covariate, alpha: float = 0.05
) -> CupedResult | None:
    """Treatment vs control with the CUPED-adjusted ratios; None when a bucket has no pre-period denominator."""
    buckets = ((control, cov_control), (treatment, cov_treatment))
    if any(not w.sx or not c.pre.sx for w, c in buckets):
        return None
    pooled = (cov_control.pre.sy + cov_treatment.pre.sy) / (cov_control.pre.sx + cov_treatment.pre.sx)
    covs = [c.cov(w) for w, c in buckets]
    pre_vars = [c.pre.variance for _, c in buckets]
    theta = sum(covs) / sum(pre_vars) if sum(pre_vars) > 0 else 0.0
    adjusted = []
    for (w, c), cov, pre_var in zip(buckets, covs, pre_vars, strict=True):
        ratio = w.ratio - theta * (c.pre.ratio - pooled)
        adjusted.append((ratio, max(w.variance - 2 * theta * cov + theta**2 * pre_var, 0.0)))
    (rc, vc), (rt, vt) = adjusted
    before = control.variance + treatment.variance
    comparison = compare_estimates(rc, vc, rt, vt, control.n, treatment.n, alpha)
    return CupedResult(comparison, theta, (vc + vt) / before if before > 0 else float("nan"))


def compare_with_cuped(
    control: Moments,
    treatment: Moments,
    cov_control: Covariate | None,
    cov_treatment: Covariate | None,
    alpha: float = 0.05,
) -> tuple[Comparison, dict | None]:
    """The CUPED comparison where a covariate exists, else the plain one; and CUPED's θ and variance ratio."""
    if cov_control is not None and cov_treatment is not None:
        result = cuped_compare(control, treatment, cov_control, cov_treatment, alpha)
        if result is not None:
            return result.comparison, {"theta": result.theta, "variance_ratio": result.variance_ratio}
    return compare(control, treatment, alpha), None
