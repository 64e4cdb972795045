"""The near-line exposure state: both backends, the quality rule, parity with the in-process law, several
processes on one SQLite file, and a hand-built day of logs ingested hour by hour."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import uuid

import numpy as np
import pyarrow as pa
import pytest

from pipelines.data.contract import Store
from pipelines.serving.exposure import (
    ExposureConfig,
    ExposureController,
    author_percentiles,
    midrank_percentile,
    posterior_ctr,
)
from pipelines.serving.nearline import NearlineState, SharedExposureController, redis_prefix, sqlite_path
from pipelines.serving.nearline_ingest import feast_author_scores, ingest_day
from pipelines.settings import get_settings

HOUR = 3600.0
T0 = 1_700_000_000.0


@pytest.fixture(params=[pytest.param("local", id="sqlite"), pytest.param("prod", id="redis", marks=pytest.mark.prod)])
def profile(request) -> str:
    return request.param


def open_state(profile: str, cfg: ExposureConfig | None = None, project: str | None = None):
    """The profile's store, as a service opens it; Redis under a fresh project (key prefix) per call."""
    settings = get_settings(profile=profile, feast_project=project or f"test_{uuid.uuid4().hex[:12]}")
    return NearlineState.open(settings, "sim", cfg), settings


@pytest.fixture
def state_factory(profile):
    """Opens states of this test's profile and deletes what they wrote to Redis afterwards."""
    opened = []

    def factory(cfg: ExposureConfig | None = None, project: str | None = None) -> NearlineState:
        state, settings = open_state(profile, cfg, project)
        opened.append((state, settings))
        return state

    yield factory
    for state, settings in opened:
        if settings.profile == "prod":
            client = state.backend._client
            keys = list(client.scan_iter(match=f"{settings.feast_project}:nearline:*"))
            if keys:
                client.delete(*keys)
        state.close()


def test_quality_rule_units() -> None:
    cfg = ExposureConfig(quality_prior_strength=100)
    clicks, exposures = np.array([10.0, 0.0, 0.0, 2.0]), np.array([100.0, 100.0, 0.0, 20.0])
    prior = 12 / 220  # pooled CTR of the four
    expected = np.array([(10 + 100 * prior) / 200, 100 * prior / 200, prior, (2 + 100 * prior) / 120])
    np.testing.assert_allclose(posterior_ctr(clicks, exposures, cfg), expected)
    np.testing.assert_allclose(midrank_percentile(expected), [0.875, 0.125, 0.375, 0.625])
    np.testing.assert_allclose(midrank_percentile(np.array([1.0, 1.0, 1.0])), [0.5, 0.5, 0.5])  # ties share
    np.testing.assert_allclose(midrank_percentile(np.array([2.0, 1.0, 2.0, 3.0])), [0.5, 0.125, 0.5, 0.875])
    assert author_percentiles({7: 0.02, 8: None, 9: 0.05, 10: float("nan")}) == {7: 0.25, 9: 0.75}


def test_predicted_content_quality_sets_each_items_prior_until_its_clicks_take_over() -> None:
    cfg = ExposureConfig(quality_prior_strength=100, content_quality_weight=1.0)
    q = np.array([0.5, -0.5, np.nan, 0.0])  # the tower's log clicks over expected clicks; NaN: no prediction
    unshown = posterior_ctr(np.zeros(4), np.zeros(4), cfg, q)
    # Nobody shown yet: the order is the content's; the item without a prediction sits at the pooled prior.
    assert unshown[0] > unshown[3] == unshown[2] > unshown[1]
    np.testing.assert_allclose(unshown[[0, 1]] / unshown[2], np.exp([0.5, -0.5]))
    clicks, exposures = np.array([0.0, 100.0, 5.0, 5.0]), np.array([0.0, 1000.0, 1000.0, 1000.0])
    prior = 110 / 3000
    scale = np.exp([0.5, -0.5, 0.0, 0.0])  # mean of the known q is 0
    expected = (clicks + 100 * prior * scale) / (exposures + 100)
    np.testing.assert_allclose(posterior_ctr(clicks, exposures, cfg, q), expected)
    # Its own clicks outweigh the content: item 1 (predicted poor, 10% over 1000 shows) beats unshown item 0.
    ranked = midrank_percentile(posterior_ctr(clicks, exposures, cfg, q))
    assert ranked[1] > ranked[0]
    # Weight 0, or no predictions: the pooled prior of before.
    off = ExposureConfig(quality_prior_strength=100, content_quality_weight=0.0)
    np.testing.assert_allclose(posterior_ctr(clicks, exposures, off, q), posterior_ctr(clicks, exposures, cfg))
    # The deviation is clipped at e^±2, so one wild prediction cannot take over the pool.
    wild = posterior_ctr(np.zeros(2), np.zeros(2), cfg, np.array([40.0, 0.0]))
    np.testing.assert_allclose(wild[0] / wild[1], np.exp(4.0))


def test_tick_differentiates_unshown_items_targets_by_predicted_content_quality(state_factory) -> None:
    state = state_factory(ExposureConfig())
    state.publish([1, 2, 3, 4], [None] * 4, np.full(4, T0))
    asked = []

    def quality(ids: list[int]) -> dict[int, float]:
        asked.append(sorted(ids))
        return {1: 0.5, 2: -0.5, 4: 0.9}  # item 3 has no tower row: it sits at their mean

    state.tick(T0 + HOUR, content_quality=quality)
    assert asked == [[1, 2, 3, 4]]  # the active items, once per tick
    snap = state.snapshot([1, 2, 3, 4])
    assert snap["target"][3] > snap["target"][0] > snap["target"][2] > snap["target"][1]
    state.tick(T0 + 2 * HOUR)  # no predictions: back to one score for all
    assert len(set(state.snapshot([1, 2, 3, 4])["target"].tolist())) == 1


def test_publish_record_tick_and_serve(state_factory) -> None:
    cfg = ExposureConfig(ki=0.5)
    state = state_factory(cfg)
    assert state.publish([1, 2, 3, 4, 2], [10, 11, None, 12, 99], np.array([T0] * 5)) == 4
    assert state.publish([1, 5], [10, 13], T0 + 30 * HOUR) == 1  # 1 is known: it keeps its state
    rows = [1] * 100 + [2] * 100 + [4] * 20 + [6] * 5 + [1]  # 6 is unknown; the last row of 1 is past its window
    times = np.array([T0 + 60.0] * 225 + [T0 + 24 * HOUR])
    clicks = np.array([1] * 10 + [0] * 90 + [0] * 100 + [1] * 2 + [0] * 18 + [1] * 5 + [1])
    assert state.record_impressions(rows, times, clicks) == 220
    snap = state.snapshot([1, 2, 3, 4, 6])
    np.testing.assert_allclose(snap["exposures"], [100, 100, 0, 20, np.nan])
    np.testing.assert_allclose(snap["clicks"], [10, 0, 0, 2, np.nan])
    np.testing.assert_allclose(snap["published"][:4], T0)  # 1 kept its first publication
    np.testing.assert_allclose(snap["target"][:4], 100 + 400 * (0.7 * 0.5 + 0.3 * 0.5))  # scored 0.5 until a tick

    # Item 5 is published in the future (age < 0) and sits at the prior with the others that lack evidence.
    assert state.tick(T0 + 2 * HOUR, {10: 1.0, 11: 0.0}) == 5
    snap = state.snapshot([1, 2, 3, 4])
    quality = np.array([0.9, 0.1, 0.4, 0.7])  # posterior CTRs rank 2 < 3 = 5 < 4 < 1 among the five
    np.testing.assert_allclose(snap["quality"], quality)
    np.testing.assert_allclose(snap["author_score"], [1.0, 0.0, 0.5, 0.5])  # no author / not in the map: 0.5
    target = 100 + 400 * (0.7 * quality + 0.3 * snap["author_score"])
    np.testing.assert_allclose(snap["target"], target)
    # Item 3: no exposures, 2 schedule hours behind at the tick: log gain = ki · (0 + 1) / 2 · 2 h.
    assert snap["log_gain"][2] == pytest.approx(0.5) and snap["error"][2] == 1.0
    assert snap["log_gain"][0] == 0.0 and snap["error"][0] == -1.0  # item 1 is far ahead
    serving = SharedExposureController(state)
    deficit = target[2] * 3 / 20 / (target[2] / 20)  # three schedule hours behind an hour after the tick
    boost = serving.boost([3, 1, 6], T0 + 3 * HOUR)
    np.testing.assert_allclose(boost, [np.exp(0.5) * (1 + deficit), 1.0, 1.0])
    assert state.snapshot([3])["log_gain"][0] == pytest.approx(0.5)  # serving wrote nothing
    state.tick(T0 + 3 * HOUR)  # no author map: authors keep their scores; trapezoid: + 0.5 · (1 + 1) / 2 · 1 h
    snap = state.snapshot([1, 3])
    assert snap["log_gain"][1] == pytest.approx(1.0) and snap["author_score"][0] == 1.0
    np.testing.assert_allclose(serving.state([3])["gain"], [np.e])

    assert state.tick(T0 + 24 * HOUR) == 1  # 1-4 are past their window: forgotten; 5 stays
    assert np.isnan(state.snapshot([1, 2, 3, 4])["published"]).all()
    assert state.snapshot()["item_id"].tolist() == [5]
    assert state.watermark() is None
    state.set_watermark(T0 + 24 * HOUR)
    assert state.watermark() == T0 + 24 * HOUR


def test_targets_follow_evidence_on_the_ramp_then_stay(state_factory) -> None:
    state = state_factory(ExposureConfig(ramp_hours=20))
    state.publish([1, 2], [None, None], np.array([T0, T0 - 19 * HOUR]))
    state.tick(T0 + HOUR)
    before = state.snapshot([1, 2])["target"]
    assert before[0] == before[1]  # no evidence: both in the middle
    state.record_impressions([1] * 50 + [2] * 50, np.full(100, T0 + 1.5 * HOUR), np.r_[np.ones(25), np.zeros(75)])
    state.tick(T0 + 2 * HOUR)  # item 2 is 21 h old: past the ramp, its target no longer moves
    after = state.snapshot([1, 2])["target"]
    assert after[0] > before[0] and after[1] == before[1]


def test_serving_boost_is_the_in_process_law_read_at_the_tick(state_factory) -> None:
    """Parity: ticking the near-line state at the times the in-process controller is asked gives the same gains
    and boosts (same target: one item, quality and author scores 0.5)."""
    cfg = ExposureConfig()
    state = state_factory(cfg)
    local = ExposureController(cfg)
    local.register([7], np.array([T0]), np.array([0.5]), np.array([0.5]))
    state.publish([7], [None], T0)
    serving = SharedExposureController(state)
    shown = {2: 10, 4: 150, 9: 30}  # behind, then well ahead, then behind again
    boosts = []
    for hour in range(1, 16):
        now = T0 + hour * HOUR
        boosts.append(local.boost([7], now)[0])  # integrates the gain up to now
        state.tick(now)
        np.testing.assert_allclose(serving.boost([7], now), boosts[-1], rtol=1e-12)
        np.testing.assert_allclose(serving.state([7])["gain"], local.state([7])["gain"], rtol=1e-12)
        if n := shown.get(hour):
            local.record([7] * n, now + 60)
            state.record_impressions([7] * n, np.full(n, now + 60), np.zeros(n))
    assert min(boosts) == 1.0 and max(boosts) > 2.0


def _record_from_another_process(home: str, batches: int) -> None:
    settings = get_settings(home=home)
    with NearlineState.open(settings) as state:
        for _ in range(batches):
            state.record_impressions([1, 1, 2, 3], np.full(4, T0 + 60), np.array([1, 0, 0, 1]))


def test_several_processes_share_one_sqlite_file(tmp_path) -> None:
    settings = get_settings(home=tmp_path / "home")
    with NearlineState.open(settings) as state:
        state.publish([1, 2], [None, None], T0)
        context = multiprocessing.get_context("spawn")
        workers = [context.Process(target=_record_from_another_process, args=(str(settings.home), 100))
                   for _ in range(2)]  # fmt: skip
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        assert [w.exitcode for w in workers] == [0, 0]
        np.testing.assert_allclose(state.snapshot([1, 2])["exposures"], [400, 200])  # no increment lost
        np.testing.assert_allclose(state.snapshot([1])["clicks"], [200])
    assert sqlite_path(settings) == settings.home / "nearline" / "sim.db"
    with NearlineState.open(settings) as reopened:  # the state outlives its handles
        np.testing.assert_allclose(reopened.snapshot([1, 2])["exposures"], [400, 200])
    assert redis_prefix(get_settings(feast_project="p"), "ml1m") == "p:nearline:{ml1m}"


DAY = dt.date(2026, 3, 2)


def _ts(day: dt.date, hours: float) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC) + dt.timedelta(hours=hours)


def write_day(data: Store) -> None:
    """Items: 100 published the day before at 20:00, 200 at 01:30, 300 at 10:00, 50 long ago (too old to track).
    Impressions of the day: each (item, hour, click) below, plus an unknown id."""
    prev = DAY - dt.timedelta(days=1)
    items = {prev: [(100, 7, _ts(prev, 20)), (50, 7, _ts(prev, -40))], DAY: [(200, 8, _ts(DAY, 1.5)),
             (300, None, _ts(DAY, 10))]}  # fmt: skip
    for day, rows in items.items():
        data.write("items", day, pa.table({
            "item_id": [r[0] for r in rows], "author_id": pa.array([r[1] for r in rows], pa.int64()),
            "category": ["c"] * len(rows), "keywords": [["k"]] * len(rows),
            "content_vector": [[0.1, 0.2]] * len(rows), "publish_time": [r[2] for r in rows],
        }), layer="clean")  # fmt: skip
    shown = [(100, 3.2, 1), (100, 19.5, 0), (100, 20.5, 0),  # the last is 24.5 h after 100's publication
             (200, 1.7, 1), (200, 2.5, 0), (200, 2.6, 0), (200, 23.9, 1),
             (300, 9.9, 0), (300, 10.2, 0), (50, 4.0, 1), (999, 5.0, 1)]  # fmt: skip
    n = len(shown)
    data.write("impressions", DAY, pa.table({
        "request_id": list(range(n)), "user_id": [1] * n, "item_id": [s[0] for s in shown],
        "event_time": [_ts(DAY, s[1]) for s in shown], "position": [0] * n, "recall_channel": ["new_item"] * n,
        "experiment_bucket": ["control"] * n, "click": [s[2] for s in shown], "conversion": [0] * n,
        "dwell_seconds": [1.0] * n,
    }), layer="clean")  # fmt: skip


def test_ingest_day_counts_logged_impressions_hour_by_hour(state_factory, tmp_path) -> None:
    data = Store(tmp_path / "data", "sim")
    write_day(data)
    state = state_factory()
    authors = {7: 0.9, 8: 0.1}
    asked = []

    def author_scores(ids: list[int]) -> dict[int, float]:
        asked.append(ids)
        return authors

    counts = ingest_day(state, data, DAY, author_scores=author_scores)
    # 100: 03:12 and 19:30 (20:30 is past its window); 200: four; 300: 10:12 only (09:54 came before its
    # publication reached the state); 50 is too old to track, 999 unknown.
    assert counts == {"hours": 24, "published": 3, "embedded": 0, "impressions": 7, "active": 2}
    snap = state.snapshot([100, 200, 300, 50, 999])
    np.testing.assert_allclose(snap["exposures"], [np.nan, 4, 1, np.nan, np.nan])  # 100 expired at 20:00
    np.testing.assert_allclose(snap["clicks"][1:3], [2, 0])
    np.testing.assert_allclose(snap["updated"][1:3], _ts(DAY, 24).timestamp())  # ticked at the last hour end
    np.testing.assert_allclose(snap["author_score"][1:3], [0.1, 0.5])  # 300 has no author
    assert asked[0] == [7] and asked[-1] == [8]  # the authors of the active items, at every tick
    assert snap["quality"][1] > snap["quality"][2]  # 2 clicks in 4 beats 0 in 1
    assert state.watermark() == _ts(DAY, 24).timestamp()
    # A re-run finds every hour ingested already: nothing is counted twice.
    assert ingest_day(state, data, DAY)["hours"] == 0
    np.testing.assert_allclose(state.snapshot([200])["exposures"], [4])
    # Serving reads only: asking for boosts (as a ranker answering requests would) counts nothing.
    SharedExposureController(state).boost([200, 300], _ts(DAY, 24.5))
    np.testing.assert_allclose(state.snapshot([200, 300])["exposures"], [4, 1])


def test_clicks_are_logged_as_engagements_read_from_each_readers_cursor(state_factory) -> None:
    state = state_factory(ExposureConfig(window_hours=24, ramp_hours=20))
    state.publish([1, 2], [7, 8], np.array([T0, T0]))
    # item 3 is not tracked; the last impression of item 1 is past its 24 h window; unclicked rows are not engaged
    state.record_impressions([1, 1, 2, 3, 1], np.array([T0 + 60, T0 + 120, T0 + 180, T0 + 240, T0 + 25 * HOUR]),
                             np.array([1, 0, 1, 1, 1]), user_ids=[10, 11, 12, 13, 14])  # fmt: skip
    rows, cursor = state.engagements()
    assert rows["item_id"].tolist() == [1, 2] and rows["user_id"].tolist() == [10, 12]
    np.testing.assert_allclose(rows["time"], [T0 + 60, T0 + 180])
    assert state.engagements(cursor)[0]["item_id"].tolist() == []  # nothing new for this reader
    state.record_impressions([2], np.array([T0 + HOUR]), np.array([1]), user_ids=[15])
    state.record_impressions([2], np.array([T0 + HOUR]), np.array([1]))  # no users given: counted, not logged
    again, later = state.engagements(cursor)
    assert again["user_id"].tolist() == [15] and later > cursor
    assert state.engagements()[0]["user_id"].tolist() == [10, 12, 15]  # another reader starts from the beginning
    state.tick(T0 + 24.5 * HOUR)  # engagements older than the window leave (item 2's of T0 + 1 h is not yet)
    assert state.engagements()[0]["user_id"].tolist() == [15]
    state.tick(T0 + 26 * HOUR)
    assert state.engagements()[0]["item_id"].tolist() == []


def test_feast_author_scores_rank_the_smoothed_ctr() -> None:
    class FakeStore:
        def get_online_features(self, features, entity_rows):
            assert features == ["author_stats_fv:author_ctr_smoothed"]
            ctr = {1: 0.01, 2: 0.05, 3: None, 4: 0.03}
            return type("R", (), {"to_dict": lambda _: {"author_ctr_smoothed": [ctr[r["author_id"]]
                                                                                for r in entity_rows]}})()  # fmt: skip

    scores = feast_author_scores(FakeStore())
    assert scores([1, 2, 3, 4]) == pytest.approx({1: 1 / 6, 2: 5 / 6, 4: 0.5})
    assert scores([]) == {}
