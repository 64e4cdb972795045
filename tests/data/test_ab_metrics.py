"""coldstart_ab_metrics: metrics on a hand-built log, statistics, SRM, and A/A and A/B checks on the simulator."""

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipelines.data.contract import Store
from pipelines.experiments.metrics import ReadoutConfig
from pipelines.experiments.readout import readout
from pipelines.experiments.report import write_report
from pipelines.experiments.stats import bootstrap_diff_ci, compare, moments, sample_ratio_check

from ..conftest import run_sim

DAY = dt.date(2026, 2, 1)


def at(hour: float) -> dt.datetime:
    return dt.datetime(2026, 2, 1, tzinfo=dt.UTC) + dt.timedelta(hours=hour)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Users 1, 3 control; 2, 4 treatment (user split). Authors: 3 (items 100, 900), 4 (items 200, 300)."""
    store = Store(tmp_path_factory.mktemp("tiny"), "sim")
    users = [1, 2, 3, 4]
    store.write("users", DAY, pa.table({
        "user_id": users, "signup_time": [at(-500)] * 4, "gender": ["F"] * 4, "age": [30] * 4,
        "occupation": ["x"] * 4, "region": ["r"] * 4, "device": ["ios"] * 4, "is_author": [False, False, True, True],
    }))  # fmt: skip
    store.write("items", DAY, pa.table({
        "item_id": [100, 200, 300, 900], "author_id": [3, 4, 4, 3], "category": ["a"] * 4,
        "keywords": [[]] * 4, "content_vector": [[0.0]] * 4,
        "publish_time": [at(1), at(2), at(2.5), at(-200)],
    }))  # fmt: skip
    store.write("publishes", DAY, pa.table({
        "item_id": [100, 200, 300], "author_id": [3, 4, 4], "publish_time": [at(1), at(2), at(2.5)],
    }))  # fmt: skip
    store.write("assignments", DAY, pa.table({
        "experiment_id": ["e"] * 4, "unit_type": ["user"] * 4, "unit_id": users,
        "bucket": ["control", "treatment", "control", "treatment"], "design": ["user_split"] * 4,
        "assigned_at": [at(0)] * 4,
    }))  # fmt: skip
    rows = [  # request, user, item, hour, position, click, conversion, dwell
        (1, 1, 100, 3, 0, 1, 1, 10.0), (1, 1, 900, 3, 1, 0, 0, 0.0),
        (2, 1, 200, 5, 0, 0, 0, 0.0),
        (3, 2, 100, 4, 0, 0, 0, 0.0), (3, 2, 200, 4, 1, 1, 0, 5.0), (3, 2, 900, 4, 2, 1, 0, 7.0),
        (3, 2, 300, 4, 3, 0, 0, 0.0),
        (4, 4, 900, 6, 0, 0, 0, 0.0),
    ]  # fmt: skip
    r, u, i, h, pos, c, conv, dwell = zip(*rows, strict=True)
    store.write("impressions", DAY, pa.table({
        "request_id": r, "user_id": u, "item_id": i, "event_time": [at(x) for x in h], "position": pos,
        "recall_channel": ["random"] * len(rows), "experiment_bucket": ["control"] * len(rows),
        "click": c, "conversion": conv, "dwell_seconds": dwell,
    }))  # fmt: skip
    cfg = ReadoutConfig(experiment_id="e", high_exposure_threshold=2, exposure_target=2, hot_clicks=1, layer="raw")
    return readout(store, DAY, DAY, cfg, bootstrap_metrics=())


# metric -> (control, treatment), worked out by hand from the log above.
EXPECTED = {
    "ctr": (1 / 3, 2 / 5),
    "dwell_per_dau": (10 / 1, 12 / 2),
    "impressions_per_dau": (3 / 1, 5 / 2),
    "publish_penetration": (1 / 1, 1 / 2),
    "posts_per_dau": (1 / 1, 2 / 2),
    "hours_to_first_exposure": (2 / 1, 3.5 / 2),
    "target_reach_24h": (1 / 1, 1 / 2),
    "new_item_ctr_high": (1 / 2, 1 / 2),
    "new_item_ctr_low": (math.nan, 0 / 1),
    "new_item_interaction_high": (1 / 2, 0 / 2),
    "new_item_interaction_low": (math.nan, 0 / 1),
    "dau_rate": (1 / 2, 2 / 2),
    "hot_share": (1 / 1, 1 / 2),
}


@pytest.mark.parametrize("metric", sorted(EXPECTED))
def test_each_metric_on_a_hand_built_log(tiny: dict, metric: str) -> None:
    got = tiny["metrics"][metric]
    want_c, want_t = EXPECTED[metric]
    np.testing.assert_allclose([got["control"], got["treatment"]], [want_c, want_t], equal_nan=True)
    daily = tiny["daily"][DAY.isoformat()][metric]
    np.testing.assert_allclose([daily["control"], daily["treatment"]], [want_c, want_t], equal_nan=True)


def test_a_metric_without_data_is_not_significant(tiny: dict) -> None:
    low = tiny["metrics"]["new_item_ctr_low"]
    assert math.isnan(low["p_value"]) and low["significant"] is False


def test_delta_method_matches_textbook_variance() -> None:
    rng = np.random.default_rng(0)
    x = rng.poisson(20, 5000) + 1
    y = rng.binomial(x, 0.1)
    m = moments(y, x)
    r = y.sum() / x.sum()
    # Deng et al.: Var(R) = (σy² - 2Rσxy + R²σx²) / (n μx²) with population moments.
    textbook = (y.var() - 2 * r * np.cov(x, y, bias=True)[0, 1] + r * r * x.var()) / (len(x) * x.mean() ** 2)
    assert m.variance == pytest.approx(textbook, rel=1e-9)


def test_delta_intervals_agree_with_bootstrap_on_simulated_data(user_split_sim) -> None:
    store, cfg, _ = user_split_sim
    result = readout(store, cfg.start_date, cfg.end_date, ReadoutConfig(layer="raw", high_exposure_threshold=100))
    for name in ("ctr", "posts_per_dau"):
        delta = result["metrics"][name]["diff_ci"]
        boot = result["metrics"][name]["bootstrap_diff_ci"]
        width = delta[1] - delta[0]
        assert abs(delta[0] - boot[0]) < 0.2 * width and abs(delta[1] - boot[1]) < 0.2 * width, (name, delta, boot)
    direct = bootstrap_diff_ci([1, 2, 3] * 50, [10] * 150, [2, 3, 4] * 50, [10] * 150)
    assert direct[0] < 0.1 < direct[1]


def test_sample_ratio_check_fires_on_skew_only() -> None:
    share = {"control": 0.5, "treatment": 0.5}
    assert sample_ratio_check({"control": 10_000, "treatment": 10_080}, share).mismatch is False
    assert sample_ratio_check({"control": 10_000, "treatment": 10_600}, share).mismatch is True
    assert (
        sample_ratio_check({"control": 2_000, "treatment": 8_000}, {"control": 0.2, "treatment": 0.8}).mismatch is False
    )


def test_srm_in_a_readout_with_units_missing_from_one_bucket(user_split_sim, tmp_path: Path) -> None:
    store, cfg, _ = user_split_sim
    fair = readout(store, cfg.start_date, cfg.end_date, ReadoutConfig(layer="raw"), bootstrap_metrics=())
    assert fair["srm"]["mismatch"] is False
    skewed = Store(tmp_path, "sim")
    for day in store.partitions("impressions"):
        for table in ("impressions", "publishes", "assignments", "items", "users"):
            skewed.write(table, day, store.read(table, day))
    # A logging bug loses 15% of treatment users' impressions on every day.
    assign = store.read_range("assignments").to_pandas()
    treated = assign.loc[assign["bucket"] == "treatment", "unit_id"].to_numpy()
    lost = set(treated[: len(treated) * 15 // 100])
    for day in store.partitions("impressions"):
        imps = store.read("impressions", day).to_pandas()
        skewed.write("impressions", day, pa.Table.from_pandas(imps[~imps["user_id"].isin(lost)], preserve_index=False))
    result = readout(skewed, cfg.start_date, cfg.end_date, ReadoutConfig(layer="raw"), bootstrap_metrics=())
    assert result["srm"]["mismatch"] is True


def test_boost_raises_publishing_in_an_author_split(author_split_sim) -> None:
    store, cfg, _ = author_split_sim
    result = readout(store, cfg.start_date, cfg.end_date, ReadoutConfig(layer="raw"), bootstrap_metrics=())
    assert result["design"] == "author_split" and "competition" in result["warning"]
    for name in ("posts_per_dau", "publish_penetration", "target_reach_24h"):
        m = result["metrics"][name]
        assert m["significant"] and m["diff"] > 0, (name, m)
    assert result["metrics"]["hours_to_first_exposure"]["diff"] < 0


def test_boost_costs_consumption_in_a_user_split(user_split_sim) -> None:
    store, cfg, _ = user_split_sim
    result = readout(store, cfg.start_date, cfg.end_date, ReadoutConfig(layer="raw"), bootstrap_metrics=())
    assert result["design"] == "user_split" and "shared by both groups" in result["warning"]
    ctr = result["metrics"]["ctr"]
    assert ctr["significant"] and ctr["diff"] < 0


def test_a_a_runs_are_significant_at_about_the_nominal_rate(tmp_path: Path) -> None:
    p_values = []
    for seed in range(14):
        store, cfg, _ = run_sim(
            tmp_path / str(seed),
            days=5,
            users=3000,
            seed=100 + seed,
            design="user_split",
            treatment_policy="popularity",
        )
        result = readout(
            store, cfg.start_date, cfg.end_date, ReadoutConfig(layer="raw", high_exposure_threshold=100),
            bootstrap_metrics=(),
        )  # fmt: skip
        p_values += [m["p_value"] for m in result["metrics"].values() if not math.isnan(m["p_value"])]
    rate = float(np.mean(np.asarray(p_values) < 0.05))
    assert len(p_values) >= 120
    print(f"A/A: {rate:.3f} of {len(p_values)} metric tests significant at 0.05")
    assert 0.01 <= rate <= 0.10, rate


def test_report_has_every_metric_and_a_plot(tiny: dict, tmp_path: Path) -> None:
    paths = write_report(tiny, tmp_path)
    page = paths["html"].read_text()
    for name in EXPECTED:
        assert f">{name}</td>" in page
    assert "data:image/png;base64," in page and "http" not in page.split("<body>")[1].split("data:image")[0]
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_on_identical_buckets() -> None:
    m = moments([1, 2, 3], [10, 10, 10])
    c = compare(m, m)
    assert c.diff == 0 and c.p_value == 1.0 and not c.significant
