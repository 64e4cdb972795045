"""Evaluation metrics on hand-computable cases, slice membership, and the gate's decisions on fixed results."""

import math

import numpy as np
import pandas as pd
import pytest

from pipelines.evaluation.gate import GateConfig, decide
from pipelines.evaluation.metrics import binary_report, gauc, oracle_gap, rating_report
from pipelines.evaluation.slices import SliceConfig, SliceError, annotate, cold_slices, slice_masks


def test_auc_logloss_calibration_by_hand() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.8])
    out = binary_report(y, {"candidate": p}, np.zeros(4), n_bootstrap=0, min_positives=1)
    # Pairs (pos, neg): (0.4, 0.1) right, (0.4, 0.6) wrong, (0.8, 0.1) right, (0.8, 0.6) right -> 3/4.
    assert out["candidate"]["auc"]["value"] == pytest.approx(0.75)
    logloss = -(math.log(0.9) + math.log(0.4) + math.log(0.4) + math.log(0.8)) / 4
    assert out["candidate"]["logloss"]["value"] == pytest.approx(logloss)
    assert out["candidate"]["calibration"]["value"] == pytest.approx(0.475 / 0.5)
    assert (out["count"], out["positives"], out["positive_rate"]) == (4, 2, 0.5)


def test_gauc_weights_users_by_impressions_and_skips_one_class_users() -> None:
    # User a: 4 rows, AUC 1.0; user b: 2 rows, AUC 0.0; user c: only negatives (ignored).
    y = np.array([0, 0, 1, 1, 0, 1, 0, 0])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.1, 0.5, 0.5])
    users = np.array(["a", "a", "a", "a", "b", "b", "c", "c"])
    assert gauc(y, p, users) == pytest.approx((4 * 1.0 + 2 * 0.0) / 6)


def test_intervals_cover_the_point_and_the_delta_of_identical_scores_is_zero() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    p = np.clip(0.3 * y + rng.random(2000) * 0.7, 0, 1)
    users = rng.integers(0, 100, 2000)
    out = binary_report(y, {"candidate": p, "champion": p.copy()}, users, n_bootstrap=50)
    for metric in ("auc", "gauc", "logloss"):
        low, high = out["candidate"][metric]["ci"]
        assert low <= out["candidate"][metric]["value"] <= high
        assert out["delta"][metric]["value"] == 0 and out["delta"][metric]["ci"] == [0, 0]
    worse = binary_report(y, {"candidate": rng.random(2000), "champion": p}, users, n_bootstrap=50)
    assert worse["delta"]["auc"]["ci"][1] < 0  # a random scorer is surely worse


def test_too_few_positives_gives_no_auc() -> None:
    y = np.array([1] + [0] * 99)
    out = binary_report(y, {"candidate": np.linspace(0, 1, 100)}, np.arange(100), n_bootstrap=10)
    assert out["candidate"]["auc"]["value"] is None and out["candidate"]["logloss"]["value"] is not None


def test_oracle_gap_is_zero_for_the_oracle() -> None:
    y = np.array([0, 1, 0, 1, 1])
    truth = np.array([0.2, 0.7, 0.4, 0.6, 0.9])
    gap = oracle_gap(y, truth, truth)
    assert gap["auc_gap"] == 0 and gap["logloss_gap"] == 0


def test_rating_metrics_by_hand() -> None:
    truth = np.array([5.0, 3.0, 1.0])
    perfect_order = np.array([4.0, 3.0, 2.0])  # errors 1, 0, 1
    reversed_order = np.array([1.0, 3.0, 5.0])  # errors 4, 0, 4
    out = rating_report([(truth, {"a": perfect_order, "b": reversed_order})], ks=(1, 3), n_bootstrap=0)
    assert out["a"]["mae"]["value"] == pytest.approx(2 / 3)
    assert out["a"]["rmse"]["value"] == pytest.approx(math.sqrt(2 / 3))
    assert out["b"]["mae"]["value"] == pytest.approx(8 / 3)
    assert out["a"]["ndcg@1"]["value"] == pytest.approx(1.0)
    # Reversed: the top pick has relevance 1 of an ideal 5.
    assert out["b"]["ndcg@1"]["value"] == pytest.approx(1 / 5)
    assert out["delta"]["mae"]["value"] == pytest.approx(2 / 3 - 8 / 3)


def _frame() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    t0 = pd.Timestamp("2026-01-10", tz="UTC")
    frame = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 2, 3],
            "item_id": [10, 11, 10, 11, 12],
            "event_time": [t0] * 5,
            "view_count": [500, 500, 3, 3, np.nan],
            "exposures_total": [2000, 5, 2000, 5, np.nan],
        }
    )
    users = pd.DataFrame({"user_id": [1, 2], "signup_time": [t0 - pd.Timedelta(days=100), t0 - pd.Timedelta(days=2)]})
    items = pd.DataFrame(
        {"item_id": [10, 11], "publish_time": [t0 - pd.Timedelta(days=20), t0 - pd.Timedelta(hours=5)]}
    )
    return frame, users, items


def test_slice_membership() -> None:
    frame, users, items = _frame()
    annotated = annotate(frame, users, items)
    # User 3 and item 12 are unknown to the contract: just signed up / just published, no activity.
    assert annotated["user_age_days"].round(3).tolist() == [100, 100, 2, 2, 0]
    assert annotated["item_age_hours"].round(3).tolist() == [480, 5, 480, 5, 0]
    masks = slice_masks(annotated, SliceConfig(custom={"heavy": "user_interactions >= 100"}))
    rows = {name: np.flatnonzero(mask).tolist() for name, mask in masks.items()}
    assert rows["overall"] == [0, 1, 2, 3, 4]
    assert rows["user=new"] == [2, 3, 4] and rows["user=warm"] == [0, 1]
    assert rows["item=new"] == [1, 3, 4] and rows["item=warm"] == [0, 2]
    assert rows["user=new&item=new"] == [3, 4] and rows["user=warm&item=warm"] == [0]
    assert rows["exposure=low"] == [1, 3, 4] and rows["exposure=high"] == [0, 2]
    assert rows["heavy"] == [0, 1]
    # By interactions and exposures instead of age, with three exposure buckets.
    cfg = SliceConfig(user_new_by="interactions", user_new_below=10, item_new_by="exposures", item_new_below=100,
                      exposure_edges=(10, 1000))  # fmt: skip
    masks = slice_masks(annotated, cfg)
    assert np.flatnonzero(masks["user=new"]).tolist() == [2, 3, 4]
    assert np.flatnonzero(masks["item=new"]).tolist() == [1, 3, 4]
    assert np.flatnonzero(masks["exposure=[10,1000)"]).tolist() == []
    assert np.flatnonzero(masks["exposure=[1000,inf)"]).tolist() == [0, 2]
    assert cold_slices(list(masks), cfg) == ["user=new", "item=new", "user=new&item=new", "user=new&item=warm",
                                             "user=warm&item=new", "exposure=[0,10)"]  # fmt: skip


@pytest.mark.parametrize("expr", ["no_such_column > 1", "user_interactions + 1", "user_interactions >"])
def test_a_bad_custom_slice_is_a_clear_error(expr: str) -> None:
    annotated = annotate(*_frame())
    with pytest.raises(SliceError, match="custom slice 'bad'"):
        slice_masks(annotated, SliceConfig(custom={"bad": expr}))


def _slices(cand_auc: float, champ_auc: float, cold_cand: float, count: int = 1000) -> dict:
    def report(c, h, n):
        return {
            "count": n,
            "positives": n // 10,
            "candidate": {"auc": {"value": c, "ci": [c - 0.01, c + 0.01]}},
            "champion": {"auc": {"value": h, "ci": [h, h]}},
            "delta": {"auc": {"value": c - h, "ci": [0, 0]}},
        }

    return {
        "overall": {"count": count, "tasks": {"ctr": report(cand_auc, champ_auc, count)}},
        "user=new": {"count": count, "tasks": {"ctr": report(cold_cand, champ_auc, count)}},
        "item=new": {"count": 50, "tasks": {"ctr": report(0.1, champ_auc, 50)}},  # too small to judge
    }


def test_gate_decisions() -> None:
    cfg = GateConfig(checks=("ctr:auc",), overall_tolerance=0.005, cold_tolerance=0.02, floors={"ctr:auc": 0.6},
                     cold_floors={}, allow_skipped_cold_checks=True)  # fmt: skip
    cold = ["user=new", "item=new"]
    equal = decide(_slices(0.70, 0.70, 0.70), cold, cfg, has_champion=True)
    assert equal["passed"] and [c["outcome"] for c in equal["checks"]] == ["pass", "pass", "skipped"]
    overall_worse = decide(_slices(0.69, 0.70, 0.70), cold, cfg, has_champion=True)
    assert not overall_worse["passed"] and "overall" in overall_worse["reasons"][0]
    within = decide(_slices(0.70, 0.70, 0.685), cold, cfg, has_champion=True)
    assert within["passed"]  # cold slice worse by 0.015 <= 0.02
    cold_worse = decide(_slices(0.71, 0.70, 0.67), cold, cfg, has_champion=True)
    assert not cold_worse["passed"] and cold_worse["reasons"][0].startswith("ctr:auc on user=new")
    assert decide(_slices(0.61, 0.0, 0.1), cold, cfg, has_champion=False)["passed"]  # floor only, no champion
    assert not decide(_slices(0.59, 0.0, 0.1), cold, cfg, has_champion=False)["passed"]


def test_gate_config_rejects_unknown_checks_and_has_melu_defaults() -> None:
    with pytest.raises(ValueError, match="task:metric"):
        GateConfig(checks=("ctr:accuracy",))
    assert GateConfig.for_model("melu").checks == ("rating:mae",)


def test_per_user_auc_equals_sklearn_per_user_ties_included() -> None:
    from sklearn.metrics import roc_auc_score

    from pipelines.evaluation.metrics import user_aucs

    rng = np.random.default_rng(3)
    users = rng.integers(0, 40, 3000)
    y = rng.integers(0, 2, 3000)
    p = np.round(rng.random(3000), 1)  # many ties
    got = user_aucs(y, p, users)
    for user, row in got.iterrows():
        mask = users == user
        assert row["auc"] == pytest.approx(roc_auc_score(y[mask], p[mask]))
        assert row["weight"] == mask.sum()
    assert len(got) == len({u for u in users if 0 < y[users == u].sum() < (users == u).sum()})


def test_weighted_rows_equal_sklearn_with_sample_weights_ties_included() -> None:
    from sklearn.metrics import log_loss, roc_auc_score

    from pipelines.evaluation.metrics import EPS, WeightedRows

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 3000)
    p = np.round(np.clip(0.2 * y + rng.random(3000) * 0.8, 0, 1), 2)  # rounded: many ties
    rows = WeightedRows(y, p)
    for _ in range(5):
        w = np.bincount(rng.integers(0, 3000, 3000), minlength=3000).astype(float)
        auc, logloss, calibration = rows.values(w)
        assert auc == pytest.approx(roc_auc_score(y, p, sample_weight=w), abs=1e-12)
        assert logloss == pytest.approx(log_loss(y, np.clip(p, EPS, 1 - EPS), sample_weight=w), abs=1e-12)
        assert calibration == pytest.approx(np.average(p, weights=w) / np.average(y, weights=w))


def test_point_estimates_equal_sklearn_ties_included() -> None:
    from sklearn.metrics import log_loss, roc_auc_score

    from pipelines.evaluation.metrics import EPS

    rng = np.random.default_rng(8)
    y = rng.integers(0, 2, 2500)
    a = np.round(np.clip(0.25 * y + rng.random(2500) * 0.75, 0, 1), 2)  # rounded: many ties
    b = rng.random(2500)
    out = binary_report(y, {"candidate": a, "champion": b}, rng.integers(0, 40, 2500), n_bootstrap=0)
    for name, p in (("candidate", a), ("champion", b)):
        assert out[name]["auc"]["value"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert out[name]["logloss"]["value"] == pytest.approx(log_loss(y, np.clip(p, EPS, 1 - EPS)), abs=1e-12)
        assert out[name]["calibration"]["value"] == pytest.approx(p.mean() / y.mean(), abs=1e-12)
    assert out["delta"]["auc"]["value"] == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b), abs=1e-12)
    gap = oracle_gap(y, b, a)
    assert gap["auc_gap"] == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b), abs=1e-12)


def test_nan_scores_are_refused_not_ranked() -> None:
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        binary_report(y, {"candidate": np.array([0.1, np.nan, 0.3, 0.9])}, np.zeros(4), n_bootstrap=0)


def test_bootstrap_intervals_are_scipys_paired_bootstrap_of_sklearn_metrics() -> None:
    """The O(n) resampling gives the intervals of resampling (y, scores) together and scoring with sklearn."""
    from scipy.stats import bootstrap
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 1500)
    a, b = np.clip(0.3 * y + rng.random(1500) * 0.7, 0, 1), rng.random(1500)
    out = binary_report(y, {"candidate": a, "champion": b}, rng.integers(0, 50, 1500), n_bootstrap=30, seed=4)
    reference = bootstrap((y, a, b), lambda yy, aa, bb: roc_auc_score(yy, aa) - roc_auc_score(yy, bb), paired=True,
                          vectorized=False, n_resamples=30, method="percentile", random_state=4)  # fmt: skip
    low, high = reference.confidence_interval
    assert out["delta"]["auc"]["ci"] == pytest.approx([low, high], abs=1e-12)
