"""Serving-time cold-start policies: hand-checked units, and a simulated day for the exposure guarantee.

The simulated day is the issue's acceptance test: the guaranteed-exposure controller gets at least 95% of new
items to their targets, a fixed age boost does not.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from pipelines.serving.nearline import NearlineState, SharedExposureController
from pipelines.serving.nearline_backends import SqliteBackend
from pipelines.serving.policies import (
    ExposureConfig,
    ExposureController,
    FusionWeights,
    NewItemEmbeddings,
    PolicyConfig,
    age_boost,
    apply_policies,
    exposure_target,
    extend_table,
    fuse,
    peer_percentile,
)

HOUR = 3600.0
T0 = 1_700_000_000.0  # an arbitrary POSIX start time


# --- new-item ID embeddings -------------------------------------------------------------------------------------


def test_knn_embedding_is_the_mean_of_the_well_exposed_nearest_items() -> None:
    ids = np.array(["a", "b", "c", "d", "e"])
    content = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0], [1.0, 0.01]])
    exposures = np.array([500, 200, 150, 900, 5])  # "e" is the closest to the query but barely exposed
    table = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [9.0, 9.0, 9.0], [-5.0, -5.0, -5.0]])
    default = np.array([0.1, 0.2, 0.3])
    knn = NewItemEmbeddings.fit(ids, content, exposures, table, default, k=2, min_exposures=100)
    query = np.array([[2.0, 0.0], [0.0, 3.0]])  # cosine only: the scale of the content does not matter
    rows = knn.embed(query)
    np.testing.assert_allclose(rows[0], (table[0] + table[1]) / 2)  # a and b, not the unexposed e
    np.testing.assert_allclose(rows[1], (table[3] + table[2]) / 2)  # d (cosine 1), then c (0.24) over b (0.11)
    assert knn.neighbour_ids(query) == [["a", "b"], ["d", "c"]]


def test_knn_embedding_falls_back_to_the_default_row() -> None:
    ids = np.array(["a", "b"])
    content = np.array([[1.0, 0.0], [0.0, 1.0]])
    table = np.array([[1.0, 1.0], [2.0, 2.0]])
    default = np.array([0.5, -0.5])
    knn = NewItemEmbeddings.fit(ids, content, np.array([1000, 1000]), table, default, k=3, min_similarity=0.0)
    # Opposite content and empty content have no neighbour with cosine > 0.
    rows = knn.embed(np.array([[-1.0, -1.0], [0.0, 0.0], [1.0, 0.0]]))
    np.testing.assert_allclose(rows, [default, default, table[0]])
    # No known item is exposed enough: every new item gets the default row.
    none = NewItemEmbeddings.fit(ids, content, np.array([3, 4]), table, default, min_exposures=100)
    np.testing.assert_allclose(none.embed(np.array([[1.0, 0.0]])), [default])
    assert none.neighbour_ids(np.array([[1.0, 0.0]])) == [[]]


def test_extend_table_appends_rows_to_a_copy() -> None:
    table = torch.arange(6, dtype=torch.float32).reshape(3, 2)
    new, first = extend_table(table, np.array([[10.0, 11.0], [12.0, 13.0]]))
    assert first == 3 and new.shape == (5, 2) and new.dtype == table.dtype
    assert torch.equal(new[:3], table) and torch.equal(new[4], torch.tensor([12.0, 13.0]))
    new[0, 0] = -1.0
    assert table[0, 0] == 0.0  # the model's table is untouched


# --- fixed boost, fusion, config --------------------------------------------------------------------------------


def test_age_boost_fades_linearly_to_one() -> None:
    cfg = PolicyConfig(boost_strength=2.0, boost_max_age_hours=24.0)
    ages = np.array([0.0, 6.0, 12.0, 24.0, 100.0, -1.0, np.nan])
    np.testing.assert_allclose(age_boost(ages, cfg), [3.0, 2.5, 2.0, 1.0, 1.0, 3.0, 1.0])
    np.testing.assert_allclose(age_boost(ages, PolicyConfig(boost_strength=0.0)), np.ones(7))


def test_fuse_is_a_weighted_geometric_product() -> None:
    p_ctr, p_cvr = np.array([0.04, 0.2]), np.array([0.25, 0.5])
    p_ctcvr = p_ctr * p_cvr
    # Default: sqrt(pCTR · pCTCVR) = pCTR · sqrt(pCVR).
    np.testing.assert_allclose(fuse(p_ctr, p_cvr, p_ctcvr, FusionWeights()), [0.04 * 0.5, 0.2 * np.sqrt(0.5)])
    np.testing.assert_allclose(fuse(p_ctr, p_cvr, p_ctcvr, FusionWeights(ctr=1, cvr=0, ctcvr=0)), p_ctr)
    np.testing.assert_allclose(fuse(p_ctr, p_cvr, p_ctcvr, FusionWeights(ctr=2, cvr=1, ctcvr=0)), p_ctr**2 * p_cvr)
    assert fuse(np.array([0.0]), np.array([0.0]), np.array([0.0]), FusionWeights(ctr=0, cvr=0, ctcvr=0))[0] == 1.0
    custom = PolicyConfig(fusion=FusionWeights(ctr=1, cvr=0, ctcvr=0))  # the whole config is accepted too
    np.testing.assert_allclose(fuse(p_ctr, p_cvr, p_ctcvr, custom), p_ctr)


def test_config_rejects_unknown_keys_and_inconsistent_exposure_settings() -> None:
    with pytest.raises(ValidationError):
        PolicyConfig(boost_strenght=1.0)
    with pytest.raises(ValidationError):
        ExposureConfig(ramp_hours=30.0, window_hours=24.0)
    with pytest.raises(ValidationError):
        ExposureConfig(min_target=600.0)
    assert ExposureController(PolicyConfig(exposure=ExposureConfig(cap=3.0))).cfg.cap == 3.0


# --- guaranteed exposure ----------------------------------------------------------------------------------------


def test_targets_lie_in_range_and_increase_with_quality() -> None:
    cfg = ExposureConfig()
    quality = np.linspace(-0.5, 1.5, 21)
    targets = exposure_target(quality, np.full(21, 0.5), cfg)
    assert targets.min() >= 100 and targets.max() <= 500
    assert np.all(np.diff(targets) >= 0) and targets[-1] > targets[0]
    assert np.all(np.diff(exposure_target(np.full(5, 0.5), np.linspace(0, 1, 5), cfg)) > 0)
    np.testing.assert_allclose(exposure_target(np.array([0.0, 1.0]), np.array([0.0, 1.0]), cfg), [100, 500])


def controller_with(item: str = "x", quality: float = 0.5, **overrides) -> ExposureController:
    ctrl = ExposureController(ExposureConfig(**overrides))
    ctrl.register([item], np.array([T0]), np.array([quality]), np.array([quality]))
    return ctrl


def test_controller_boost_is_one_on_track_above_one_behind_and_capped() -> None:
    ctrl = controller_with(ramp_hours=20.0, window_hours=24.0, cap=5.0)
    target = ctrl.state(["x"])["target"][0]  # 300
    ctrl.record(["x"] * int(np.ceil(target / 2)), T0 + 9 * HOUR)
    assert ctrl.boost(["x"], T0 + 10 * HOUR)[0] == 1.0  # on the curve at half the ramp
    behind = controller_with(ramp_hours=20.0, cap=5.0)
    small = behind.boost(["x"], T0 + 0.25 * HOUR)[0]
    larger = behind.boost(["x"], T0 + 0.5 * HOUR)[0]
    assert 1.0 < small < larger < 5.0  # grows while the item stays behind
    assert behind.boost(["x"], T0 + 15 * HOUR)[0] == 5.0  # far behind: capped
    assert behind.boost(["x", "unknown"], T0 + 25 * HOUR).tolist() == [1.0, 1.0]  # past the window; unknown id


def test_controller_gain_returns_to_one_once_on_track_and_stops_at_the_target() -> None:
    ctrl = controller_with(ramp_hours=20.0, cap=20.0)
    target = ctrl.state(["x"])["target"][0]
    assert ctrl.boost(["x"], T0 + 4 * HOUR)[0] > 1.0
    ctrl.record(["x"] * int(target * 0.5), T0 + 4 * HOUR)  # a burst puts it well ahead of the curve
    assert ctrl.boost(["x"], T0 + 5 * HOUR)[0] == 1.0
    ctrl.boost(["x"], T0 + 8 * HOUR)  # ahead for hours: the integral gain decays to 1
    assert ctrl.state(["x"])["gain"][0] == pytest.approx(1.0)
    ctrl.record(["x"] * int(target), T0 + 9 * HOUR)
    assert ctrl.boost(["x"], T0 + 23 * HOUR)[0] == 1.0  # target reached


def test_controller_counts_only_exposures_inside_the_window_and_prunes_expired_items() -> None:
    ctrl = controller_with(window_hours=24.0)
    targets = ctrl.register(["y", "y", "x"], np.array([T0 + 20 * HOUR]), np.full(3, 0.5), np.full(3, 0.5))
    assert len(ctrl) == 2 and targets.tolist() == [300.0, 300.0, 300.0]  # repeated and known ids: one entry each
    ctrl.record(["x", "x", "y", "ghost"], T0 + 1 * HOUR)  # before y's publication: still inside its window
    np.testing.assert_allclose(ctrl.state(["x", "y", "ghost"])["exposures"], [2, 1, np.nan])
    assert ctrl.prune(T0 + 25 * HOUR) == 1 and len(ctrl) == 1 and "x" not in ctrl
    # After a restart the service re-registers young items with the exposures the item stats already count.
    ctrl.register(["z"], np.array([T0 + 20 * HOUR]), np.array([0.5]), np.array([0.5]), exposures=np.array([7]))
    assert ctrl.state(["z"])["exposures"][0] == 7
    ctrl.record(["y"], dt.datetime.fromtimestamp(T0 + 30 * HOUR, dt.UTC))
    assert ctrl.state(["y"])["exposures"][0] == 2
    ctrl.record(["y"], T0 + 50 * HOUR)  # past y's window: not counted, and the hourly prune drops y and z
    assert len(ctrl) == 0 and np.isnan(ctrl.state(["y"])["exposures"][0])


def test_apply_policies_labels_what_touched_each_candidate() -> None:
    ctrl = controller_with(item="new-behind")
    ctrl.register(["new-done"], np.array([T0]), np.array([0.0]), np.array([0.0]))
    ctrl.record(["new-done"] * 100, T0 + 1 * HOUR)
    cfg = PolicyConfig(boost_strength=1.0, boost_max_age_hours=24.0)
    ids = ["warm", "new-behind", "new-done", "old-oov"]
    scores = np.array([0.5, 0.2, 0.2, 0.1])
    ages = np.array([500.0, 2.0, 2.0, 48.0])
    oov = np.array([False, True, False, True])
    adjusted, touched = apply_policies(scores, ids, ages, ctrl, T0 + 2 * HOUR, cfg, out_of_vocab=oov)
    assert touched == [
        [],
        ["new_item_embedding", "boost", "guaranteed_exposure"],
        ["boost"],
        ["new_item_embedding"],
    ]
    assert adjusted[0] == 0.5 and adjusted[3] == 0.1 and adjusted[2] == pytest.approx(0.2 * (1 + 22 / 24))
    assert adjusted[1] > adjusted[2]
    off = PolicyConfig(new_item_embedding="default", exposure=ExposureConfig(enabled=False))
    same, labels = apply_policies(scores, ids, ages, None, T0 + 2 * HOUR, off, out_of_vocab=oov)
    np.testing.assert_allclose(same, scores)
    assert labels == [[], [], [], []]
    with pytest.raises(ValueError, match="controller"):
        apply_policies(scores, ids, ages, None, T0, PolicyConfig())


def test_apply_policies_registers_unseen_young_items_from_request_quality() -> None:
    ctrl = ExposureController()
    now = dt.datetime.fromtimestamp(T0 + 10 * HOUR, dt.UTC)
    ids = [11, 12, 13, 14]  # int ids work as long as they are used consistently
    ages = np.array([1.0, 3.0, 100.0, np.nan])  # 13 is too old, 14 has no known age: neither is registered
    p_ctr = np.array([0.01, 0.04, 0.03, 0.02])
    _, touched = apply_policies(np.ones(4), ids, ages, ctrl, now, PolicyConfig(), quality=p_ctr)
    assert len(ctrl) == 2 and 13 not in ctrl and 14 not in ctrl
    state = ctrl.state([11, 12])
    # Percentiles among the 4 candidates: 11 is lowest (0.125), 12 highest (0.875); author score 0.5.
    np.testing.assert_allclose(state["target"], 100 + 400 * (0.7 * np.array([0.125, 0.875]) + 0.3 * 0.5))
    assert touched[0] == touched[1] == ["guaranteed_exposure"]  # behind their curves from the first request
    # Known ids keep their state: a second request with other qualities changes nothing.
    apply_policies(np.ones(2), [11, 12], ages[:2], ctrl, now, PolicyConfig(), quality=np.array([0.9, 0.1]))
    np.testing.assert_allclose(ctrl.state([11, 12])["target"], state["target"])
    # Published `age` hours before the request: 11 is past its window 24 h after publication.
    assert ctrl.boost([11, 12], T0 + 33.5 * HOUR).tolist()[0] == 1.0
    np.testing.assert_allclose(peer_percentile(np.array([3.0, 1.0, 2.0])), [5 / 6, 1 / 6, 0.5])


def test_in_process_author_scores_come_from_the_candidates_author_features() -> None:
    """Without the near-line state the ranker ranks the candidates' authors by Feast's smoothed CTR."""
    import pandas as pd

    from pipelines.serving.ranker import _author_scores

    frame = pd.DataFrame({"author_id": [1, 2, 2, 3, None], "author_ctr_smoothed": [0.05, 0.01, 0.01, None, 0.2]})
    cfg = ExposureConfig(author_default_score=0.4)
    np.testing.assert_allclose(_author_scores(frame, cfg), [0.75, 0.25, 0.25, 0.4, 0.4])  # 3 has no history
    assert _author_scores(frame.drop(columns="author_ctr_smoothed"), cfg) is None  # no author features: 0.5


# --- the simulated day ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Day:
    """A two-day simulation; new items published in the first 24 h are judged over their first 24 h."""

    hours: int = 48
    requests_per_hour: int = 300
    n_warm: int = 2000
    new_per_hour: int = 5
    n_candidates: int = 200
    new_candidates: int = 25  # of the 200, how many retrieval takes from items younger than 24 h
    shown: int = 10
    seed: int = 7
    ingest_requests: int = 25  # near-line: logged impressions are ingested every this many requests (~5 min)


def simulate(policy: PolicyConfig, day: Day = Day(), nearline: NearlineState | None = None) -> dict[str, np.ndarray]:
    """Serve ``day`` under ``policy``; returns per judged new item its target and exposures in its first 24 h.

    Items have a true quality (lognormal, the same law for warm and new). The ranker's score is the quality
    times a per-item model error and a per-request personal factor; the cold model under-rates new items
    (0.6x on average) and is noisier about them, as a model that has never seen their ids would be.
    Candidates: ``new_candidates`` items younger than 24 h (retrieval's fresh pool), the rest warm.

    With ``nearline``, the controller is the near-line one: items are published into the state as they appear,
    the served impressions (with clicks drawn from the true quality) are logged and ingested every
    ``day.ingest_requests`` requests, the writer ticks at each hour end with the authors' scores, and the
    judged target is the item's target at its last tick (it moves with the click evidence).
    """
    rng = np.random.default_rng(day.seed)
    n_warm, n_new = day.n_warm, day.hours * day.new_per_hour
    ids = np.arange(n_warm + n_new)  # one index space: warm items first, then new items in publication order
    new_quality = rng.normal(0.0, 0.5, n_new)
    score = np.concatenate([
        np.exp(rng.normal(0.0, 0.5, n_warm) + rng.normal(0.0, 0.2, n_warm)),
        0.6 * np.exp(new_quality + rng.normal(0.0, 0.4, n_new)),
    ])  # fmt: skip
    published = np.concatenate([np.full(n_warm, T0 - 1000 * HOUR),
                                T0 + (np.arange(n_new) // day.new_per_hour + rng.random(n_new)) * HOUR])  # fmt: skip
    is_new = ids >= n_warm
    # The ranker's inputs to the target: the item's pCTR percentile among its peers, its author's CTR percentile.
    quality_pct = (np.argsort(np.argsort(score[n_warm:])) + 0.5) / n_new
    author_pct = np.clip(quality_pct + rng.normal(0.0, 0.3, n_new), 0.0, 1.0)
    targets = exposure_target(quality_pct, author_pct, policy.exposure)

    if nearline is None:
        controller = ExposureController(policy.exposure)
        controller.register(ids[n_warm:].tolist(), published[n_warm:], quality_pct, author_pct)
    else:
        controller, log = SharedExposureController(nearline, policy.exposure), _Log(nearline, new_quality, n_warm)
    exposures = np.zeros(n_warm + n_new)
    for hour in range(day.hours):
        if nearline is not None:  # this hour's new items enter the state when published
            due = np.flatnonzero(is_new & (published < T0 + (hour + 1) * HOUR) & (published >= T0 + hour * HOUR))
            nearline.publish(ids[due], due - n_warm, published[due])  # one author per item: its index
        for request, now in enumerate(T0 + (hour + np.sort(rng.random(day.requests_per_hour))) * HOUR):
            fresh = n_warm + np.flatnonzero((published[n_warm:] <= now) & (now - published[n_warm:] < 24 * HOUR))
            new_pick = rng.choice(fresh, min(len(fresh), day.new_candidates), replace=False)
            pick = np.concatenate([rng.integers(0, n_warm, day.n_candidates - len(new_pick)), new_pick])
            scores = score[pick] * np.exp(rng.normal(0.0, 0.5, len(pick)))  # this user's taste
            age = (now - published[pick]) / HOUR
            adjusted, _ = apply_policies(scores, ids[pick], age, controller, now, policy, out_of_vocab=is_new[pick])
            top = np.argpartition(-adjusted, day.shown - 1)[: day.shown]
            np.add.at(exposures, pick[top], age[top] < 24)
            if nearline is None:
                controller.record(ids[pick[top]], now)
            else:
                log.shown(ids[pick[top]], now, flush=(request + 1) % day.ingest_requests == 0)
        if nearline is not None:
            log.tick(T0 + (hour + 1) * HOUR, dict(enumerate(author_pct.tolist())), targets)
    judged = published[n_warm:] < T0 + 24 * HOUR
    return {"target": targets[judged], "exposures": exposures[n_warm:][judged]}


class _Log:
    """The impression log of a near-line simulation and its writer: clicks drawn from the item's true quality."""

    def __init__(self, nearline: NearlineState, new_quality: np.ndarray, n_warm: int) -> None:
        self.nearline, self.n_warm = nearline, n_warm
        self.p_click = np.clip(0.05 * np.exp(new_quality), 0.0, 1.0)  # new items only; warm items are not tracked
        self.rng = np.random.default_rng(0)  # its own stream: the served requests stay the in-process run's
        self.rows: list[tuple[np.ndarray, float]] = []

    def shown(self, item_ids: np.ndarray, now: float, flush: bool) -> None:
        self.rows.append((item_ids, now))
        if flush:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        items = np.concatenate([i for i, _ in self.rows])
        times = np.concatenate([np.full(len(i), t) for i, t in self.rows])
        new = items >= self.n_warm
        clicks = np.zeros(len(items))
        clicks[new] = self.rng.random(new.sum()) < self.p_click[items[new] - self.n_warm]
        self.nearline.record_impressions(items, times, clicks)
        self.rows = []

    def tick(self, now: float, author_scores: dict[int, float], targets: np.ndarray) -> None:
        """Ingest the rest of the hour, tick, and keep each tracked item's latest target (its last one wins)."""
        self.flush()
        self.nearline.tick(now, author_scores)
        state = self.nearline.snapshot()
        targets[state["item_id"] - self.n_warm] = state["target"]


def test_simulated_day_controller_reaches_targets_and_a_fixed_boost_does_not() -> None:
    paced = simulate(PolicyConfig(boost_strength=0.0))
    # Strength 4 (5x at publication, fading to 1x at 24 h) gives new items more exposure in total than the
    # controller does, so where it misses targets that is the allocation, not the budget.
    fixed = simulate(PolicyConfig(boost_strength=4.0, exposure=ExposureConfig(enabled=False)))
    paced_ratio, fixed_ratio = paced["exposures"] / paced["target"], fixed["exposures"] / fixed["target"]
    summary = (
        f"controller: {(paced_ratio >= 1).mean():.1%} reach target, {paced['exposures'].sum():.0f} exposures; "
        f"fixed boost: {(fixed_ratio >= 1).mean():.1%} reach target, {fixed['exposures'].sum():.0f} exposures, "
        f"{(fixed_ratio > 2).mean():.1%} above 2x target, {(fixed_ratio < 0.5).mean():.1%} below half"
    )
    assert (paced_ratio >= 1).mean() >= 0.95, summary
    assert np.median(paced_ratio) < 1.1, summary  # targets are met, not flooded
    assert (fixed_ratio >= 1).mean() < 0.95, summary
    assert fixed["exposures"].sum() > paced["exposures"].sum(), summary
    assert (fixed_ratio > 2).mean() > 0.05 and (fixed_ratio < 0.5).mean() > 0.05, summary  # over- and under-exposed


def test_simulated_day_nearline_controller_reaches_targets_from_logged_impressions(tmp_path) -> None:
    """The same day paced from the shared near-line state: exposures counted from the impression log, gain
    integrated at hourly ticks, targets re-estimated from click evidence; serving only reads."""
    with NearlineState(SqliteBackend(tmp_path / "nearline.db")) as nearline:
        paced = simulate(PolicyConfig(boost_strength=0.0), nearline=nearline)
    ratio = paced["exposures"] / paced["target"]
    summary = f"near-line: {(ratio >= 1).mean():.1%} reach target, median ratio {np.median(ratio):.2f}"
    assert (ratio >= 1).mean() >= 0.95, summary
    assert np.median(ratio) < 1.2, summary
