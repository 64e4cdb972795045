"""A/A properties of the readout: error rates before and after Holm, and CUPED on a correlated pre-period."""

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest

from pipelines.experiments.aa import false_positive_rates, relabelled
from pipelines.experiments.config import ReadoutConfig
from pipelines.experiments.cuped import covariate, cuped_compare
from pipelines.experiments.readout import readout, unit_sums
from pipelines.experiments.stats import moments

from ..conftest import run_sim

# Thresholds scaled to SMALL_SIM's traffic so that every metric has data to test.
SIM_CFG = dict(layer="raw", high_exposure_threshold=100, exposure_target=40, hot_clicks=10, hot_days=2)


def test_a_a_by_relabelling_units_holds_the_error_rates(user_split_sim) -> None:
    """Relabelling the units of one run at random is an A/A: about 5% of single tests reject, and after Holm at
    most about 5% of families have any rejection (without it, far more)."""
    store, cfg, _ = user_split_sim
    units = unit_sums(store, cfg.start_date, cfg.end_date, ReadoutConfig(**SIM_CFG))
    names, out = relabelled(units, n_runs=300, seed=5)
    tested = np.isfinite(out["p_value"]).mean(axis=0)
    assert (tested == 1).sum() >= 12, dict(zip(names, tested, strict=True))
    rates = false_positive_rates(out["p_value"])
    per_test, holm, raw = rates["per_test"], rates["familywise_corrected"], rates["familywise_uncorrected"]
    print({k: round(v.share, 4) for k, v in rates.items()})
    assert 0.03 <= per_test.share <= 0.07, per_test
    assert holm.share <= 0.07 and holm.low <= 0.05, holm
    assert raw.share > 0.2 and raw.low > holm.high, (raw, holm)


def test_a_a_simulations_through_the_readout(tmp_path: Path) -> None:
    """Simulations whose arms run the same policy, read out end to end (CUPED on the first two days included)."""
    p_values, holm_families = [], 0
    cfg = ReadoutConfig(**{**SIM_CFG, "high_exposure_threshold": 30, "exposure_target": 20, "hot_clicks": 5},
                        cuped_pre_days=2)  # fmt: skip
    for seed in range(6):
        store, sim, _ = run_sim(tmp_path / str(seed), days=6, users=3000, seed=100 + seed,
                                design="user_split", treatment_policy="popularity")  # fmt: skip
        result = readout(store, sim.start_date + dt.timedelta(days=2), sim.end_date, cfg, bootstrap_metrics=())
        assert all(m["cuped"] for n, m in result["metrics"].items() if n in ("dau_rate", "ctr", "posts_per_dau"))
        p_values += [m["p_value"] for m in result["metrics"].values() if not math.isnan(m["p_value"])]
        holm_families += any(m["significant"] for m in result["metrics"].values())
    rate = float(np.mean(np.asarray(p_values) < 0.05))
    print(f"A/A: {rate:.3f} of {len(p_values)} tests significant at 0.05; {holm_families}/6 families after Holm")
    assert len(p_values) >= 60 and rate <= 0.12, rate
    assert holm_families <= 1


@pytest.fixture(scope="module")
def cuped_runs(user_split_sim) -> tuple[list[str], dict, dict]:
    """The last 5 days of the 10-day run as window, the first 5 as pre-period, relabelled 300 times."""
    store, cfg, _ = user_split_sim
    start = cfg.start_date + dt.timedelta(days=5)
    units = unit_sums(store, start, cfg.end_date, ReadoutConfig(**SIM_CFG, cuped_pre_days=5))
    names, plain = relabelled(units, n_runs=300, seed=6)
    _, adjusted = relabelled(units, n_runs=300, seed=6, cuped=True)
    return names, plain, adjusted


@pytest.mark.parametrize("metric", ["dau_rate", "impressions_per_dau", "posts_per_dau", "publish_penetration"])
def test_cuped_shrinks_the_variance_of_activity_metrics(cuped_runs, metric: str) -> None:
    names, plain, adjusted = cuped_runs
    j = names.index(metric)
    ratio = np.var(adjusted["diff"][:, j]) / np.var(plain["diff"][:, j])
    assert ratio < 0.8, ratio
    # The reported standard error is the spread of the estimate over relabellings.
    assert np.mean(adjusted["se"][:, j]) / np.std(adjusted["diff"][:, j]) == pytest.approx(1.0, abs=0.15)


def test_cuped_keeps_the_error_rate_and_centres_on_zero(cuped_runs) -> None:
    names, _, adjusted = cuped_runs
    rates = false_positive_rates(adjusted["p_value"])
    assert 0.03 <= rates["per_test"].share <= 0.07 and rates["familywise_corrected"].share <= 0.07, rates
    tested = np.isfinite(adjusted["diff"]).all(axis=0)
    z = np.mean(adjusted["diff"][:, tested], axis=0) / (np.std(adjusted["diff"][:, tested], axis=0) / np.sqrt(300))
    assert np.all(np.abs(z) < 3.5), dict(zip(np.asarray(names)[tested], z.round(2), strict=True))


def test_cuped_in_the_readout_is_the_unit_level_computation(user_split_sim) -> None:
    """The SQL sums behind the readout's CUPED give what numpy computes from the unit table."""
    store, cfg, _ = user_split_sim
    start = cfg.start_date + dt.timedelta(days=5)
    rc = ReadoutConfig(**SIM_CFG, cuped_pre_days=5)
    result = readout(store, start, cfg.end_date, rc, bootstrap_metrics=())
    units = unit_sums(store, start, cfg.end_date, rc).to_pandas()
    for name in ("ctr", "dau_rate", "posts_per_dau"):
        sides = [units[units["bucket"] == b] for b in ("control", "treatment")]
        m = [moments(u[f"{name}__y"], u[f"{name}__x"]) for u in sides]
        c = [covariate(u[f"{name}__y"], u[f"{name}__x"], u[f"{name}__py"], u[f"{name}__px"]) for u in sides]
        want = cuped_compare(m[0], m[1], c[0], c[1])
        got = result["metrics"][name]
        assert got["diff"] == pytest.approx(want.comparison.diff, rel=1e-9, abs=1e-12)
        assert got["p_value"] == pytest.approx(want.comparison.p_value, rel=1e-6)
        assert got["cuped"]["variance_ratio"] == pytest.approx(want.variance_ratio, rel=1e-9)
