"""The readout's statistics on synthetic data: Holm / BH, Kaplan-Meier against scipy, CUPED bias and variance."""

import numpy as np
import pytest
from scipy import stats

from pipelines.experiments.aa import false_positive_rates, rate
from pipelines.experiments.correction import adjust
from pipelines.experiments.cuped import covariate, cuped_compare
from pipelines.experiments.stats import compare, moments
from pipelines.experiments.survival import first_exposure, kaplan_meier


def test_holm_and_bh_on_a_worked_example() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04, then running max.
    np.testing.assert_allclose(adjust(p, "holm"), [0.03, 0.06, 0.06, 0.02])
    # BH: sorted times 4/1, 4/2, 4/3, 4/4 = 0.02, 0.02, 0.04, 0.04, then running min from the top.
    np.testing.assert_allclose(adjust(p, "bh"), [0.02, 0.04, 0.04, 0.02])


def test_tests_without_a_p_value_are_not_in_the_family() -> None:
    got = adjust([0.01, float("nan"), 0.02], "holm")
    assert np.isnan(got[1])
    np.testing.assert_allclose(got[[0, 2]], [0.02, 0.02])  # m = 2, not 3
    assert np.isnan(adjust([float("nan")], "bh")).all()
    with pytest.raises(ValueError, match="unknown correction"):
        adjust([0.1], "bonferroni")  # type: ignore[arg-type]


def test_holm_rejects_what_the_step_down_procedure_rejects() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        p = rng.uniform(0, 0.1, rng.integers(1, 15))
        order = np.sort(p)
        m = len(p)
        k = next((i for i in range(m) if order[i] > 0.05 / (m - i)), m)  # first step that fails
        assert (adjust(p, "holm") < 0.05).sum() == k


def test_kaplan_meier_matches_scipy() -> None:
    rng = np.random.default_rng(2)
    t = np.round(rng.exponential(5, 300), 1)  # rounding makes ties
    followed = np.round(rng.uniform(0, 15, 300), 1)
    event = t <= followed
    obs = np.where(event, t, followed)
    times = np.unique(obs)
    events = np.array([np.sum((obs == x) & event) for x in times])
    censored = np.array([np.sum((obs == x) & ~event) for x in times])
    ours_t, ours_s = kaplan_meier(times, events, censored)
    ref = stats.ecdf(stats.CensoredData(uncensored=obs[event], right=obs[~event]))
    np.testing.assert_allclose(ours_s, ref.sf.evaluate(ours_t), atol=1e-12)


def test_first_exposure_keeps_never_exposed_items() -> None:
    # Four items exposed at 1, 2, 3 h; one never exposed, followed 30 h.
    fe = first_exposure(np.array([1.0, 2.0, 3.0, 30.0]), np.array([1, 1, 1, 0]), np.array([0, 0, 0, 1]), cap=24)
    assert (fe.items, fe.exposed, fe.never_exposed) == (4, 3, 1)
    assert fe.median_hours == 2.0 and fe.share_unexposed_at_cap == pytest.approx(0.25)
    assert fe.restricted_mean_hours == pytest.approx((1 + 2 + 3 + 24) / 4)  # the restricted mean with the cap
    short = first_exposure(np.array([1.0, 5.0]), np.array([1, 0]), np.array([0, 1]), cap=24)
    assert short.restricted_mean_hours is None and short.share_unexposed_at_cap is None  # not followed to the cap


def _units(rng: np.random.Generator, n: int, effect: float) -> tuple[np.ndarray, ...]:
    """Units with a persistent rate: pre-period and window counts are correlated; treatment multiplies y."""
    rate_, activity = rng.gamma(2.0, 0.05, n), rng.gamma(2.0, 50.0, n)
    x_pre, x = rng.poisson(activity) + 1, rng.poisson(activity) + 1
    y_pre = rng.poisson(rate_ * x_pre)
    treated = rng.random(n) < 0.5
    y = rng.poisson(rate_ * x * np.where(treated, 1 + effect, 1.0))
    return treated, y, x, y_pre, x_pre


def test_cuped_is_unbiased_and_narrower_on_a_ratio_metric() -> None:
    rng = np.random.default_rng(3)
    plain, adjusted, ratios = [], [], []
    for _ in range(300):
        t, y, x, yp, xp = _units(rng, 2000, effect=0.1)
        mc, mt = moments(y[~t], x[~t]), moments(y[t], x[t])
        result = cuped_compare(mc, mt, covariate(y[~t], x[~t], yp[~t], xp[~t]), covariate(y[t], x[t], yp[t], xp[t]))
        plain.append(compare(mc, mt).rel_diff)
        adjusted.append(result.comparison.rel_diff)
        ratios.append(result.variance_ratio)
    adjusted, plain = np.asarray(adjusted), np.asarray(plain)
    assert abs(adjusted.mean() - 0.1) < 3 * adjusted.std() / np.sqrt(300)  # the true lift, on average
    assert abs(plain.mean() - 0.1) < 3 * plain.std() / np.sqrt(300)
    assert adjusted.var() < 0.5 * plain.var() and np.mean(ratios) < 0.5
    assert np.mean(ratios) == pytest.approx(adjusted.var() / plain.var(), rel=0.25)  # the reported shrinkage


def test_error_rates_and_their_wilson_intervals() -> None:
    r = rate(5, 100)
    assert r.share == 0.05 and r.low < 0.05 < r.high
    p = np.array([[0.01, 0.5, np.nan], [0.3, 0.2, 0.04], [0.9, 0.8, 0.7]])
    rates = false_positive_rates(p)
    assert (rates["per_test"].k, rates["per_test"].n) == (2, 8)
    assert rates["familywise_uncorrected"].k == 2 and rates["familywise_corrected"].k == 1  # 0.04 * 3 > 0.05


def test_permutation_p_value_holds_alpha_on_few_skewed_units() -> None:
    """A/A on 60 heavy-tailed units per bucket: the permutation test rejects about alpha of the time; the delta
    method's normal approximation is not guaranteed to here (it is what the permutation test replaces)."""
    from pipelines.experiments.stats import permutation_p_value

    rng = np.random.default_rng(11)
    rejections = 0
    for run in range(200):
        x = rng.pareto(1.5, 120) + 1
        y = rng.binomial(np.round(x).astype(int), 0.2)
        p = permutation_p_value(y[:60], x[:60], y[60:], x[60:], n_resamples=500, seed=run)
        assert 0 < p <= 1
        rejections += p < 0.05
    assert 0.01 <= rejections / 200 <= 0.09, rejections
    # A real difference is found.
    x = rng.pareto(1.5, 120) + 1
    y = np.concatenate(
        [rng.binomial(np.round(x[:60]).astype(int), 0.1), rng.binomial(np.round(x[60:]).astype(int), 0.4)]
    )
    assert permutation_p_value(y[:60], x[:60], y[60:], x[60:], n_resamples=500) < 0.01
