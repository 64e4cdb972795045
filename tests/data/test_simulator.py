"""The simulator: determinism, contract conformance, and each cold-start phenomenon as a statistical test."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy import stats

from pipelines.data.contract import RECALL_CHANNELS, Store
from pipelines.data.simulator import Simulator, SimulatorConfig

from ..conftest import run_sim


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.parquet"))
    }


def frame(store: Store, table: str, layer: str = "raw") -> pd.DataFrame:
    return store.read_range(table, layer=layer).to_pandas()


@pytest.fixture(scope="module")
def logs(user_split_sim):
    store, cfg, _ = user_split_sim
    imp = frame(store, "impressions")
    truth = frame(store, "impression_truth", "truth")
    users = frame(store, "users")
    items = frame(store, "items")
    user_truth = pq.read_table(store.root / "truth" / "user_truth.parquet").to_pandas()
    item_truth = pq.read_table(store.root / "truth" / "item_truth.parquet").to_pandas()
    imp["is_new_user"] = truth["is_new_user"].to_numpy()
    imp["day"] = imp["event_time"].dt.floor("D")
    interest = np.stack(user_truth["interest"].to_numpy())
    topic = item_truth["topic"].to_numpy()
    imp["match"] = interest[imp["user_id"], topic[imp["item_id"]]] * cfg.n_topics
    return store, cfg, imp, truth, users, items


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    small = {"days": 2, "users": 800}
    run_sim(tmp_path / "a", **small)
    run_sim(tmp_path / "b", **small)
    run_sim(tmp_path / "c", **small, seed=12)
    a, b, c = (digest(tmp_path / x / "sim") for x in "abc")
    assert a == b and len(a) >= 12
    assert a != c


class _RecordingFeed:
    """Wraps a feed and keeps every candidate slate and shown slate that crossed the seam."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls = []

    def order(self, requests, candidates):
        shown = self.inner.order(requests, candidates)
        self.calls.append((candidates, shown))
        return shown

    def published(self, publishes):
        self.inner.published(publishes)

    def logged(self, impressions):
        self.logged_rows = getattr(self, "logged_rows", 0) + impressions.num_rows
        self.inner.logged(impressions)


def test_the_feed_only_reorders_candidates_and_the_log_shows_its_order(tmp_path: Path) -> None:
    _, cfg, _ = run_sim(tmp_path / "plain", days=1, users=500)
    recorded = Store(tmp_path / "recorded", "sim")
    sim = Simulator(cfg, recorded)
    sim.feed = _RecordingFeed(sim.feed)
    sim.run()
    assert digest(tmp_path / "recorded" / "sim") == digest(tmp_path / "plain" / "sim"), "the seam changed the run"
    assert sim.feed.calls
    for candidates, shown in sim.feed.calls:
        assert shown.items.shape == candidates.items.shape
        # Each slate is a permutation of its candidates, every item keeping its recall channel.
        pairs = [np.sort(s.items * len(RECALL_CHANNELS) + s.channel, axis=1) for s in (candidates, shown)]
        assert (pairs[0] == pairs[1]).all()
    logged = frame(recorded, "impressions")
    shown_items = np.concatenate([shown.items.ravel() for _, shown in sim.feed.calls])
    assert (logged["item_id"].to_numpy() == shown_items).all()
    assert sim.feed.logged_rows == len(logged)  # the feed was handed every logged impression


def test_rerun_with_fewer_days_removes_stale_partitions(tmp_path: Path) -> None:
    store, _, _ = run_sim(tmp_path, days=3, users=500)
    run_sim(tmp_path, days=2, users=500)
    assert len(store.partitions("impressions")) == 2
    assert len(store.partitions("impression_truth", "truth")) == 2


def test_partitions_hold_their_own_day(logs) -> None:
    store, cfg, imp, truth, users, items = logs
    assert len(store.partitions("impressions")) == cfg.days
    for day in store.partitions("impressions"):
        times = store.read("impressions", day, columns=["event_time"]).column("event_time").to_pandas()
        assert (times.dt.date == day).all()
    assert imp.groupby(["request_id", "position"]).size().max() == 1
    assert imp.groupby(["request_id", "item_id"]).size().max() == 1, "an item twice in one slate"
    assert set(imp["recall_channel"]) <= {"popular", "interest", "new_item", "random"}


def test_truth_is_aligned_and_calibrated(logs) -> None:
    _, _, imp, truth, _, _ = logs
    assert (truth["request_id"].to_numpy() == imp["request_id"].to_numpy()).all()
    assert (truth["item_id"].to_numpy() == imp["item_id"].to_numpy()).all()
    # Observed rates match the true probabilities (a binomial check on ~1M draws).
    n = len(imp)
    assert abs(imp["click"].mean() - truth["p_click"].mean()) < 4 * np.sqrt(0.25 / n)
    clicked = imp["click"] == 1
    assert abs(imp.loc[clicked, "conversion"].mean() - truth.loc[clicked, "p_conversion_given_click"].mean()) < 0.01
    assert (imp.loc[imp["click"] == 0, ["conversion", "dwell_seconds"]] == 0).all().all(), "funnel rule broken"
    assert 0.03 < imp["click"].mean() < 0.15


def test_referential_integrity(logs) -> None:
    _, _, imp, _, users, items = logs
    assert imp["user_id"].isin(users["user_id"]).all()
    assert imp["item_id"].isin(items["item_id"]).all()
    assert items["author_id"].isin(users.loc[users["is_author"], "user_id"]).all()


def test_new_users_are_a_small_minority(logs) -> None:
    _, _, imp, _, _, _ = logs
    share = imp["is_new_user"].mean()
    assert 0.005 < share < 0.05


def test_new_users_click_more(logs) -> None:
    _, _, imp, _, _, _ = logs
    new, warm = imp[imp["is_new_user"]], imp[~imp["is_new_user"]]
    table = [
        [new["click"].sum(), len(new) - new["click"].sum()],
        [warm["click"].sum(), len(warm) - warm["click"].sum()],
    ]
    _, p_value = stats.fisher_exact(table, alternative="greater")
    assert new["click"].mean() > 1.2 * warm["click"].mean()
    assert p_value < 1e-6


def _ctr_ratio(df: pd.DataFrame, column: str) -> float:
    lo, hi = df[column].quantile([0.2, 0.8])
    return df.loc[df[column] >= hi, "click"].mean() / df.loc[df[column] <= lo, "click"].mean()


def test_new_users_follow_popularity_more_and_interests_less(logs) -> None:
    _, _, imp, _, _, _ = logs
    # Popularity an outside model can see: the item's clicks in the previous day's log.
    daily = imp.groupby(["day", "item_id"])["click"].sum().rename("prev_clicks").reset_index()
    daily["day"] += pd.Timedelta(days=1)
    df = imp.merge(daily, on=["day", "item_id"], how="left").fillna({"prev_clicks": 0})
    df = df[df["day"] > df["day"].min()]
    new, warm = df[df["is_new_user"]], df[~df["is_new_user"]]
    assert _ctr_ratio(new, "prev_clicks") > 1.15 * _ctr_ratio(warm, "prev_clicks")
    assert _ctr_ratio(warm, "match") > 1.5 * _ctr_ratio(new, "match")


def test_new_items_have_no_history_before_publication(logs) -> None:
    _, _, imp, _, _, items = logs
    joined = imp[["item_id", "event_time"]].merge(items[["item_id", "publish_time"]], on="item_id")
    assert (joined["event_time"] > joined["publish_time"]).all()
    published_in_log = items[items["publish_time"] >= imp["event_time"].min()]
    first_seen = joined.groupby("item_id")["event_time"].min()
    seen = published_in_log[published_in_log["item_id"].isin(first_seen.index)]
    assert len(seen) > 100
    assert (first_seen[seen["item_id"]].to_numpy() > seen["publish_time"].to_numpy()).all()


def test_boost_treatment_gives_new_items_more_exposure(logs) -> None:
    _, _, imp, _, _, items = logs
    young = imp.merge(items[["item_id", "publish_time"]], on="item_id")
    young = young["event_time"] - young["publish_time"] < pd.Timedelta(hours=48)
    shares = young.groupby(imp["experiment_bucket"]).mean()
    assert shares["treatment"] > 1.5 * shares["control"]


def test_user_split_assignment_is_fair_and_consistent(logs) -> None:
    store, cfg, imp, _, users, _ = logs
    assign = frame(store, "assignments")
    assert set(assign["design"]) == {"user_split"} and set(assign["unit_type"]) == {"user"}
    assert assign["unit_id"].is_unique and set(assign["unit_id"]) == set(users["user_id"])
    treated = (assign["bucket"] == "treatment").sum()
    assert stats.binomtest(treated, len(assign), cfg.treatment_share).pvalue > 1e-3
    bucket = assign.set_index("unit_id")["bucket"]
    assert (imp["experiment_bucket"].to_numpy() == bucket[imp["user_id"]].to_numpy()).all()


def test_authors_publish_more_after_early_exposure(author_split_sim) -> None:
    store, cfg, _ = author_split_sim
    imp = frame(store, "impressions")
    publishes = frame(store, "publishes")
    assign = frame(store, "assignments").set_index("unit_id")["bucket"]
    items = frame(store, "items")
    # Treatment authors' new items reach their early-exposure target more often ...
    early = imp.merge(items[["item_id", "author_id", "publish_time"]], on="item_id")
    early = early[early["event_time"] - early["publish_time"] < pd.Timedelta(hours=24)]
    exposures = early.groupby("item_id").size().reindex(publishes["item_id"], fill_value=0)
    bucket_of_item = assign[publishes["author_id"]].to_numpy()
    reached = exposures.to_numpy() >= cfg.early_exposure_target
    assert reached[bucket_of_item == "treatment"].mean() > reached[bucket_of_item == "control"].mean() + 0.2
    # ... and their authors publish more in the second week.
    late = publishes[publishes["publish_time"] >= publishes["publish_time"].min() + pd.Timedelta(days=7)]
    per_author = late.groupby("author_id").size().reindex(assign.index, fill_value=0)
    treat, ctrl = per_author[assign == "treatment"], per_author[assign == "control"]
    _, p_value = stats.mannwhitneyu(treat, ctrl, alternative="greater")
    assert treat.mean() > 1.1 * ctrl.mean()
    assert p_value < 0.01


def test_random_policy_spreads_exposure_more_than_popularity(tmp_path: Path) -> None:
    def top_share(policy: str) -> float:
        store, _, _ = run_sim(tmp_path / policy, days=2, users=3000, policy=policy, design="none")
        counts = frame(store, "impressions")["item_id"].value_counts()
        return counts.head(len(counts) // 10).sum() / counts.sum()

    assert top_share("popularity") > top_share("random") + 0.1


def test_config_rejects_unknown_keys_and_bad_mixes() -> None:
    with pytest.raises(ValueError, match="extra"):
        SimulatorConfig(dayz=3)
    with pytest.raises(ValueError, match="summing to 1"):
        SimulatorConfig(channel_mix={"popularity": (1, 1, 0, 0), "random": (0, 0, 0, 1), "boost": (0, 0, 1, 0)})
    with pytest.raises(ValueError, match="keyword_topic_share"):
        SimulatorConfig(keyword_topic_share=0.8, keyword_author_share=0.3)
