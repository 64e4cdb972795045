"""The balanced author split: groups from the same draws, each group's new-item slots held, configs that refuse it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from pipelines.data.sim_config import SimulatorConfig
from pipelines.data.sim_world import author_buckets
from pipelines.experiments.closed_loop import ClosedLoopConfig
from pipelines.experiments.config import ReadoutConfig
from pipelines.experiments.feed import PlatformFeed
from pipelines.experiments.readout import design_shares, readout
from pipelines.serving.policies import PolicyConfig
from tests.data.test_ab_metrics import CFG, D1, D2, at, write_log


def test_author_groups_are_25_50_25_from_the_same_draws() -> None:
    u = np.random.default_rng(3).random(200_000)
    balanced = author_buckets(u, SimulatorConfig(design="balanced_author_split", treatment_share=0.25,
                                                 treatment_policy="popularity"))  # fmt: skip
    shares = np.bincount(balanced, minlength=3) / len(u)
    np.testing.assert_allclose(shares, [0.25, 0.25, 0.5], atol=0.005)
    # The treated authors are those of a plain author split with the same share: the streams stay as they were.
    plain = author_buckets(u, SimulatorConfig(design="author_split", treatment_share=0.25))
    np.testing.assert_array_equal(balanced == 1, plain == 1)
    assert set(np.unique(plain)) == {0, 1}


def test_configs_refuse_what_a_balanced_split_cannot_be() -> None:
    with pytest.raises(ValidationError, match="at most 0.5"):
        SimulatorConfig(design="balanced_author_split", treatment_share=0.6, treatment_policy="popularity")
    with pytest.raises(ValidationError, match="closed-loop"):
        SimulatorConfig(design="balanced_author_split", treatment_share=0.25)  # boost recall for treatment only
    with pytest.raises(ValidationError, match="at most 0.5"):
        ClosedLoopConfig(design="balanced_author_split", treatment_share=0.7)
    assert design_shares("balanced_author_split", 0.25) == {"control": 0.25, "treatment": 0.25, "holdout": 0.5}
    assert design_shares("balanced_author_split", 0.5) == {"control": 0.5, "treatment": 0.5}
    assert design_shares("author_split", 0.3) == {"control": 0.7, "treatment": 0.3}


def _feed(slate_size: int) -> PlatformFeed:
    """Control: plain ranking; treatment: a strong fixed boost for new items (what would take control's slots
    if nothing held the shares)."""
    arms = {0: PolicyConfig(exposure={"enabled": False}),
            1: PolicyConfig(exposure={"enabled": False}, boost_strength=50.0, boost_max_age_hours=24.0)}  # fmt: skip
    return PlatformFeed(None, None, arms, None, slate_size, balanced_new_item_hours=24.0)


@pytest.mark.parametrize("seed", range(40))
def test_each_group_keeps_its_new_item_slots_and_treatment_only_reorders_its_own(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k, n = 5, 20
    feed = _feed(k)
    base = rng.random(n) + 0.01
    group = rng.integers(0, 3, n)  # control, treatment, holdout
    age = np.where(rng.random(n) < 0.5, rng.uniform(0, 23, n), rng.uniform(30, 300, n))
    age[rng.random(n) < 0.1] = np.nan  # publish time unknown: never new
    items = np.arange(n)
    scores = feed._policies(base, items, age, group, 1e9, np.zeros(n, bool))
    final, neutral = scores
    slate = feed._balanced(scores, age, group)
    top = np.argsort(-neutral, kind="stable")[:k]
    new = np.nan_to_num(age, nan=np.inf) < 24
    np.testing.assert_array_equal(neutral, base)  # control's policies change nothing here
    # Every slot that is not a treatment new item's in the neutral slate is the neutral slate's.
    kept = ~(new[top] & (group[top] == 1))
    np.testing.assert_array_equal(slate[kept], top[kept])
    # Treatment's new-item slots (count and positions) are held, filled with its best new items by its own order.
    refilled = slate[~kept]
    assert (new[refilled] & (group[refilled] == 1)).all() and len(set(slate.tolist())) == k
    pool = np.flatnonzero(new & (group == 1))
    np.testing.assert_array_equal(refilled, pool[np.argsort(-final[pool], kind="stable")[: len(refilled)]])


def test_without_balance_the_boost_takes_control_slots() -> None:
    """The same boost in a plain author split takes slots from control's items: what the balance prevents."""
    arms = _feed(2).arms
    plain = PlatformFeed(None, None, arms, None, 2)
    base = np.array([0.9, 0.8, 0.1])
    group = np.array([0, 0, 1])
    age = np.array([100.0, 100.0, 1.0])
    final, _ = plain._policies(base, np.arange(3), age, group, 1e9, np.zeros(3, bool))
    assert 2 in np.argsort(-final)[:2]
    assert set(_feed(2)._balanced(_feed(2)._policies(base, np.arange(3), age, group, 1e9, np.zeros(3, bool)),
                                  age, group).tolist()) == {0, 1}  # fmt: skip


def test_readout_of_a_balanced_split_compares_control_and_treatment_and_counts_the_holdout(tmp_path: Path) -> None:
    store = write_log(tmp_path, "author")
    units = {3: "control", 4: "treatment", 1: "holdout", 2: "holdout"}
    store.write("assignments", D1, pa.table({
        "experiment_id": ["e"] * 4, "unit_type": ["author"] * 4, "unit_id": list(units),
        "bucket": list(units.values()), "design": ["balanced_author_split"] * 4, "assigned_at": [at(0)] * 4,
    }))  # fmt: skip
    result = readout(store, D1, D2, ReadoutConfig(**CFG), treatment_share=0.25, bootstrap_metrics=())
    assert result["design"] == "balanced_author_split"
    assert result["srm"]["counts"] == {"control": 1, "holdout": 2, "treatment": 1}
    assert result["srm"]["expected_share"] == {"control": 0.25, "treatment": 0.25, "holdout": 0.5}
    # The compared groups are read as in an author split (authors 3 and 4's items); the holdout is not compared.
    np.testing.assert_allclose([result["metrics"]["ctr"]["control"], result["metrics"]["ctr"]["treatment"]],
                               [3 / 6, 2 / 4])  # fmt: skip
    assert "fixed share" in result["warning"]
    # A bucket the design does not have is refused.
    store.write("assignments", D1, pa.table({
        "experiment_id": ["e"] * 3, "unit_type": ["author"] * 3, "unit_id": [3, 4, 1],
        "bucket": ["control", "treatment", "holdout"], "design": ["author_split"] * 3, "assigned_at": [at(0)] * 3,
    }))  # fmt: skip
    with pytest.raises(ValueError, match="compares control and treatment"):
        readout(store, D1, D2, ReadoutConfig(**CFG), bootstrap_metrics=())
    assert dt.date(2026, 2, 1) == D1
