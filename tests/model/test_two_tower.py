"""The two-tower retrieval model (MODELS.md §8): the logQ correction against its formula, the streaming frequency
estimate on a stream of known rates, point-in-time histories, unit vectors, new items from row 0 and content, and a
model trained for real on a tiny simulated log (recall above random, registered, gated, loaded back)."""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.models.two_tower import StreamingFrequency, TwoTower, corrected_logits
from pipelines.training.two_tower import TwoTowerTraining, embed_items, embed_users, fit_two_tower
from pipelines.training.two_tower_data import evaluate_recall, histories_before, read_log, recall_task

from ..conftest import run_sim

WINDOW = (dt.date(2026, 1, 1), dt.date(2026, 1, 4))  # the last day is held out
TINY = {"model": {"dim": 16, "embed_dim": 8, "hidden": [32]}, "train": {"epochs": 3, "batch_size": 256}}
STREAMING = {**TINY, "model": {**TINY["model"], "logq": "streaming"}}


@pytest.fixture(scope="module")
def tiny_log(tmp_path_factory: pytest.TempPathFactory):
    """A 4-day log of 1,500 users: (store, the window's log)."""
    store, _, _ = run_sim(tmp_path_factory.mktemp("two_tower"), days=4, users=1500, seed=23, design="none")
    return store, read_log(store, *WINDOW, layer="raw")


@pytest.fixture(scope="module")
def fitted(tiny_log):
    """Trained with the paper's streaming estimate (the train hook's test trains the default, window counts)."""
    return fit_two_tower(tiny_log[1], WINDOW[1], TwoTowerTraining(**STREAMING))


def test_the_logq_correction_lowers_each_item_by_its_log_p() -> None:
    user = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2], [0.3, 1.0], [0.6, 0.6]]), dim=1)
    item = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]]), dim=1)
    p = torch.tensor([0.5, 0.01, 0.1])  # item 0 is the popular one
    plain = corrected_logits(user, item, None, 0.05)
    corrected = corrected_logits(user, item, torch.log(p), 0.05)
    torch.testing.assert_close(plain, user @ item.T / 0.05)
    torch.testing.assert_close(corrected, plain - torch.log(p).unsqueeze(0))  # column j moves by -log p_j
    # relative to the rare item, the popular one loses log(0.5) - log(0.01) of logit in every row
    gap = (plain[:, 0] - plain[:, 1]) - (corrected[:, 0] - corrected[:, 1])
    torch.testing.assert_close(gap, torch.full((3,), math.log(0.5 / 0.01)))
    assert (torch.softmax(corrected, 1)[:, 0] < torch.softmax(plain, 1)[:, 0]).all()
    masked = corrected_logits(user, item, None, 0.05, torch.tensor([7, 8, 7]))  # row 2 clicked row 0's item
    assert masked[0, 2] == -math.inf and masked[2, 0] == -math.inf and torch.isfinite(masked.diagonal()).all()


def test_the_streaming_frequency_estimate_converges_on_known_rates() -> None:
    rates = {11: 1.0, 12: 0.25, 13: 0.05}
    estimate = StreamingFrequency(buckets=1024, alpha=0.01)
    rng = np.random.default_rng(0)
    for _ in range(6000):
        seen = [i for i, r in rates.items() if rng.random() < r]
        estimate.update(torch.tensor(seen + [999], dtype=torch.int64))  # 999 every step too
    p = torch.exp(estimate.log_p(torch.tensor(list(rates)))).numpy()
    np.testing.assert_allclose(p, list(rates.values()), rtol=0.2)
    assert float(torch.exp(estimate.log_p(torch.tensor([5])))) == pytest.approx(1 / 6000)  # never seen: once in t


def test_history_is_the_clicks_strictly_before_the_impression() -> None:
    t = pd.Timestamp("2026-01-01", tz="UTC")
    clicks = pd.DataFrame({"user_id": [1, 1, 1, 1, 2],
                           "item_id": [10, 11, 12, 13, 20],
                           "event_time": [t, t + pd.Timedelta(1, "h"), t + pd.Timedelta(2, "h"),
                                          t + pd.Timedelta(2, "h"), t]})  # fmt: skip
    at = [t, t + pd.Timedelta(2, "h"), t + pd.Timedelta(3, "h"), t + pd.Timedelta(3, "h"), t + pd.Timedelta(1, "h")]
    got = histories_before(clicks, np.array([1, 1, 1, 1, 2]), np.array(at), n=3)
    assert [list(h) for h in got] == [[], [11, 10], [13, 12, 11], [13, 12, 11], [20]]  # ties at 2h are not history
    assert [list(h) for h in histories_before(clicks, np.array([3]), t, n=3)] == [[]]  # no clicks: empty


def test_training_histories_never_hold_the_clicked_item_or_later_clicks(tiny_log, fitted) -> None:
    from pipelines.training.two_tower_data import clicks_of

    clicks = clicks_of(tiny_log[1].impressions)
    rows = clicks.sample(300, random_state=0)
    got = histories_before(clicks, rows["user_id"].to_numpy(), rows["event_time"].to_numpy(), 20)
    for (_, row), history in zip(rows.iterrows(), got, strict=True):
        mine = clicks[(clicks["user_id"] == row["user_id"]) & (clicks["event_time"] < row["event_time"])]
        assert list(history) == list(mine["item_id"].to_numpy()[::-1][:20])


def test_vectors_are_unit_norm_and_a_new_item_embeds_from_row_0_and_its_content(tiny_log, fitted) -> None:
    items = tiny_log[1].items
    vectors = embed_items(fitted.model, fitted.encoder, items)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    users = tiny_log[1].users.head(50)
    u = embed_users(fitted.model, fitted.encoder, users, [[]] * 50)
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, atol=1e-5)
    new = items.iloc[[0, 1]].assign(item_id=[10**9, 10**9 + 1])  # never seen: both on row 0
    assert (fitted.encoder.item_tensors(new)["item"] == 0).all()
    pair = embed_items(fitted.model, fitted.encoder, new)
    assert not np.allclose(pair[0], pair[1], atol=1e-3)  # different content, different vectors
    other_id = embed_items(fitted.model, fitted.encoder, new.iloc[[0]].assign(item_id=10**9 + 7))
    np.testing.assert_allclose(other_id[0], pair[0], atol=1e-6)  # an unknown id is row 0 whatever its value
    bare = embed_items(fitted.model, fitted.encoder, pd.DataFrame({"item_id": [10**9 + 9]}))  # no content at all
    assert np.isfinite(bare).all() and np.linalg.norm(bare) == pytest.approx(1.0, abs=1e-5)
    stranger = embed_users(fitted.model, fitted.encoder, pd.DataFrame({"user_id": [10**9]}), [[int(items.item_id[0])]])
    assert np.linalg.norm(stranger) == pytest.approx(1.0, abs=1e-5)


def test_row_0_is_trained_and_dropout_is_off_when_embedding(tiny_log, fitted) -> None:
    steps = fitted.counts["epochs"] * math.ceil(fitted.counts["train_pairs"] / 256)
    assert int(fitted.model.frequency.step) == steps  # one streaming update per training step, none validating
    torch.manual_seed(TwoTowerTraining(**STREAMING).train.seed)
    fresh = TwoTower(fitted.model.spec, fitted.model.cfg)
    assert not torch.allclose(fresh.items.weight[0], fitted.model.items.weight[0])
    assert not torch.allclose(fresh.users.weight[0], fitted.model.users.weight[0])
    items = tiny_log[1].items.head(100)
    np.testing.assert_array_equal(embed_items(fitted.model, fitted.encoder, items),
                                  embed_items(fitted.model, fitted.encoder, items))  # fmt: skip


def test_training_on_a_tiny_window_recalls_above_random(tiny_log, fitted) -> None:
    log = tiny_log[1]
    task = recall_task(log, WINDOW[1], fitted.encoder.history_len)
    from pipelines.training.two_tower import two_tower_scorer

    k = 50
    rng = np.random.default_rng(0)
    scorers = {"two_tower": two_tower_scorer(fitted.model, fitted.encoder, task, log.items),
               "random": lambda rows, pool: rng.random((len(rows), len(pool)))}  # fmt: skip
    result = evaluate_recall(task, scorers, k)["all"]
    assert result["users"] > 200
    assert result["random"] < 0.15  # ~k / pool
    assert result["two_tower"] > 2 * result["random"]
    assert fitted.history[-1]["train_loss"] < fitted.history[0]["train_loss"]


def test_the_train_hook_registers_a_version_the_gate_tags_and_it_loads_back(tiny_log) -> None:
    import mlflow

    from pipelines.catalog import model as catalog_model
    from pipelines.settings import get_settings
    from pipelines.training.config import TrainRequest
    from pipelines.training.two_tower import load_two_tower, train_for_catalog

    store, log = tiny_log
    settings = get_settings()
    shutil.copytree(store.root / "raw", Path(settings.data_dir) / "sim" / "clean")  # as if validated
    tower_version = _champion_content_tower(settings, store)  # the item tower then reads its vectors too
    entry = catalog_model("two_tower")
    assert entry.registered_name == "coldstart_two_tower" and entry.family.name == "retrieval"
    quick = {**TINY, "train": {**TINY["train"], "epochs": 1}, "evaluation": {"per_hour": 10, "k": 100}}  # plumbing
    request = TrainRequest(dataset="sim", start=WINDOW[0], end=WINDOW[1], overrides=quick)
    result = train_for_catalog(settings, entry, request)
    assert result["version"] == "1" and not result["reused"]
    client = mlflow.MlflowClient()
    tags = client.get_model_version("coldstart_two_tower", "1").tags
    assert tags["gate"] == ("passed" if result["gate"]["passed"] else "blocked")
    assert "popularity" in tags["gate_reason"] and float(tags["recall_at_k"]) == pytest.approx(result["gate"]["recall"])
    assert result["metrics"]["recall_all_two_tower"] > 0
    loaded = load_two_tower(settings, alias="candidate")
    assert mlflow.get_run(result["run_id"]).data.tags["lineage.content_tower"] == tower_version
    assert loaded.encoder.tower_dim == 8 and loaded.encoder.tower.version == tower_version  # bundled, loaded back
    rows = log.items.head(20)[["item_id", "category", "keywords", "content_vector"]]
    pyfunc = mlflow.pyfunc.load_model("models:/coldstart_two_tower@candidate")
    served = pyfunc.predict(rows)
    np.testing.assert_allclose(np.stack(served["vector"]), loaded.embed_items(rows), atol=1e-6)
    users = pd.DataFrame({"user_id": [1, 10**9], "history": [[int(rows.item_id[0])], []]})
    out = pyfunc.predict(users, params={"side": "users"})
    np.testing.assert_allclose(np.stack(out["vector"]), loaded.embed_users(users, list(users["history"])), atol=1e-6)
    champion = mlflow.MlflowClient().get_registered_model("coldstart_two_tower").aliases.get("champion")
    assert (champion == "1") == result["gate"]["passed"]  # champion only through the gate
    _assert_the_replay_report(settings, result)
    again = train_for_catalog(settings, entry, request)
    assert again["reused"] and again["evaluation"] == json.loads(json.dumps(result["evaluation"]))  # read back


def _assert_the_replay_report(settings, result: dict) -> None:
    """The held-out day's replay: figures per channel and slice in the result, the report on disk and in MLflow."""
    import mlflow

    evaluation = result["evaluation"]
    assert "skipped" not in evaluation and evaluation["day"] == WINDOW[1].isoformat()
    assert set(evaluation["recall"]) == {"any", "1h", "6h", "24h", "30d", "lookalike", "category", "keyword", "cluster"}
    assert set(evaluation["recall"]["any"]) == {"all", "new_user", "warm_user", "new_item", "warm_item"}
    assert 0 < evaluation["requests"] <= 24 * 10 and evaluation["recall"]["any"]["all"]["clicks"] > 0
    assert set(evaluation["coverage"]["any"]) == {"1h", "24h"} and evaluation["new_items"]["published"] > 0
    folder = Path(settings.reports_dir) / "evaluation" / "sim" / "two_tower" / f"v{result['version']}"
    report = json.loads((folder / "report.json").read_text())
    assert report["recall"].keys() == evaluation["recall"].keys() and (folder / "report.html").exists()
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(result["run_id"], "evaluation")}
    assert logged == {"evaluation/report.json", "evaluation/report.html"}


def _champion_content_tower(settings, store) -> str:
    """A tiny content tower registered as ``champion`` (what ``train_models`` trains first)."""
    import mlflow

    from pipelines.settings import use_mlflow_experiment
    from pipelines.training.content_data import read_window
    from pipelines.training.content_tower import ContentTowerTraining, fit_tower, log_and_register

    items, impressions = read_window(store, WINDOW[0], WINDOW[1] - dt.timedelta(days=1), layer="raw")
    cfg = ContentTowerTraining(model={"dim": 8, "embed_dim": 4, "hidden": [16]}, triplets={"max_triplets": 500},
                               train={"epochs": 1, "batch_size": 128})  # fmt: skip
    use_mlflow_experiment(settings, "coldstart_training")
    with mlflow.start_run():
        version = log_and_register(fit_tower(items, impressions, cfg), items.head(5))
    mlflow.MlflowClient().set_registered_model_alias("coldstart_content_tower", "champion", version)
    return version


def test_the_evaluation_config_reads_catalog_options_then_overrides() -> None:
    from pipelines.training.config import TrainRequest

    request = TrainRequest(overrides={"evaluation": {"k": 50}})
    cfg = TwoTowerTraining.from_request(request, {"recall_margin": 0.0, "evaluation": {"per_hour": 7, "k": 9}})
    assert (cfg.evaluation.k, cfg.evaluation.per_hour, cfg.evaluation.enabled) == (50, 7, True)
    with pytest.raises(ValueError, match="extra"):
        TwoTowerTraining.from_request(TrainRequest(overrides={"evaluation": {"per_day": 3}}))


def test_unknown_config_keys_are_rejected() -> None:
    with pytest.raises(ValueError, match="extra"):
        TwoTowerTraining(model={"temperatur": 0.1})
    with pytest.raises(ValueError, match="extra"):
        TwoTowerTraining(data={"history": 3})
