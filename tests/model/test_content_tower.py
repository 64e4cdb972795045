"""The content tower (MODELS.md §7): the triplet hinge against its formula, the co-engagement positives against a
brute-force item-CF cosine, and a tower trained for real on a tiny simulated log (the loss falls, vectors are
unit-norm and seeded, a new item gets a vector from content alone, the registered version gives the same)."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.data.contract import Store
from pipelines.models.content_tower import ContentSpec, ContentTower, ContentTowerConfig, triplet_hinge
from pipelines.training.content_data import TripletConfig, co_engaged, observed_quality, read_window, same_category
from pipelines.training.content_tower import ContentTowerTraining, embed_items, fit_tower

from ..conftest import run_sim

DAYS = 4
WINDOW = (dt.date(2026, 1, 1), dt.date(2026, 1, 3))  # the last simulated day's items are new to the tower
TINY = {"model": {"dim": 8, "embed_dim": 4, "hidden": [16], "quality_hidden": [8]},
        "triplets": {"max_triplets": 3000}, "train": {"epochs": 3, "batch_size": 128}}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A 4-day log of 2,000 users: (store, the window's catalog, its impressions, the items published after)."""
    store, _, _ = run_sim(tmp_path_factory.mktemp("content_tower"), days=DAYS, users=2000, seed=23, design="none")
    items, impressions = read_window(store, *WINDOW, layer="raw")
    everything, _ = read_window(store, WINDOW[0], WINDOW[1] + dt.timedelta(days=1), layer="raw")
    return store, items, impressions, everything[~everything["item_id"].isin(items["item_id"])]


@pytest.fixture(scope="module")
def fitted(tiny_log):
    _, items, impressions, _ = tiny_log
    return fit_tower(items, impressions, ContentTowerTraining(**TINY))


def test_the_hinge_is_the_formula_and_zero_once_the_margin_is_met() -> None:
    m = 0.3
    anchor = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])  # not unit: the loss takes cosines
    positive = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    negatives = torch.tensor([[[0.0, 1.0], [1.0, 0.1]], [[1.0, 1.0], [-1.0, 0.0]], [[0.0, 5.0], [1.0, 0.0]]])
    loss = triplet_hinge(anchor, positive, negatives, m)
    expected = [[max(0.0, math.cos(math.radians(90)) + m - 1.0), max(0.0, math.cos(math.atan(0.1)) + m - 1.0)],
                [max(0.0, math.cos(math.radians(45)) + m - math.cos(math.radians(45))), 0.0],
                [max(0.0, 1.0 + m - 1.0), 0.0]]  # fmt: skip
    torch.testing.assert_close(loss, torch.tensor(expected), atol=1e-6, rtol=0)
    assert loss[0, 0] == 0 and loss[0, 1] > 0  # cos(a,b-) + m <= cos(a,b+): zero; within the margin: positive
    assert loss[1, 0] == pytest.approx(m)  # b- as close as b+: exactly the margin
    a = torch.tensor([[1.0, 0.0]])
    at_hinge = triplet_hinge(a, torch.tensor([[1.0, 0.0]]), torch.tensor([[[0.7, math.sqrt(1 - 0.49)]]]), m)
    assert float(at_hinge) == pytest.approx(0.0, abs=1e-6)  # cos(a,b-) + m == cos(a,b+): on the hinge


def test_hard_negatives_are_the_closest_other_positive_never_the_own() -> None:
    spec = ContentSpec(n_categories=2, n_keywords=3, max_keywords=2, content_dim=2)
    tower = ContentTower(spec, ContentTowerConfig(dim=2, hard_negatives=True))
    vector = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]],
                           [[0.0, 1.0], [0.9, 0.1], [1.0, 0.0]],
                           [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]])  # [B=3, S=3, d=2]  # fmt: skip
    item = torch.tensor([[1, 2, 9], [3, 4, 9], [5, 2, 9]])  # row 2's positive is row 0's positive too
    negatives = tower.negatives({"item": item}, vector)  # [3, 2, 2]
    assert negatives.shape == (3, 2, 2)
    torch.testing.assert_close(negatives[0, 1], vector[1, 1])  # not row 2's positive: that is item 2, its own
    torch.testing.assert_close(negatives[1, 1], vector[0, 1])
    torch.testing.assert_close(negatives[2, 1], vector[1, 1])


def test_co_engagement_positives_are_the_item_cf_cosine_top_k() -> None:
    rng = np.random.default_rng(0)
    impressions = pd.DataFrame({"user_id": rng.integers(0, 40, 600), "item_id": rng.integers(0, 12, 600),
                                "click": rng.random(600) < 0.3, "position": 0})  # fmt: skip
    cfg = TripletConfig(min_clicks=2, min_co_users=2, positives_per_item=3)
    pairs = co_engaged(impressions, cfg)
    clicked = impressions[impressions["click"]].groupby("item_id")["user_id"].agg(set)
    clicked = clicked[clicked.map(len) >= 2]
    brute = {(i, j): len(clicked[i] & clicked[j]) / math.sqrt(len(clicked[i]) * len(clicked[j]))
             for i, j in itertools.permutations(clicked.index, 2) if len(clicked[i] & clicked[j]) >= 2}  # fmt: skip
    for anchor, group in pairs.groupby("anchor"):
        mine = sorted(((-c, j) for (i, j), c in brute.items() if i == anchor))[:3]
        assert list(group["positive"]) == [j for _, j in mine]
        np.testing.assert_allclose(group["cosine"], [-c for c, _ in mine])
    assert set(pairs["anchor"]) == {i for i, _ in brute}


def test_the_category_rule_pairs_other_items_of_the_same_category() -> None:
    items = pd.DataFrame({"item_id": np.arange(30), "category": np.repeat(["a", "b", "c"], 10)})
    pairs = same_category(
        items, TripletConfig(positive_rule="category", positives_per_item=4), np.random.default_rng(1)
    )
    category = items.set_index("item_id")["category"]
    assert (pairs["anchor"] != pairs["positive"]).all()
    assert (category.loc[pairs["anchor"]].to_numpy() == category.loc[pairs["positive"]].to_numpy()).all()
    assert set(pairs["anchor"]) == set(items["item_id"])


def test_observed_quality_is_smoothed_clicks_over_expected_clicks() -> None:
    impressions = pd.DataFrame({"item_id": [1, 1, 2, 2], "position": [0, 1, 0, 1], "click": [1, 0, 1, 1]})
    quality = observed_quality(impressions, prior=2.0)
    # position CTRs 1.0 and 0.5: each item expects 1.5 clicks
    assert quality.loc[1, "quality"] == pytest.approx(math.log((1 + 2) / (1.5 + 2)))
    assert quality.loc[2, "quality"] == pytest.approx(math.log((2 + 2) / (1.5 + 2)))
    assert quality.loc[2, "weight"] == pytest.approx(1.5 / 3.5)


def test_training_lowers_the_loss_and_is_seeded(tiny_log, fitted) -> None:
    _, items, impressions, _ = tiny_log
    history = fitted.history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert min(h["val_loss"] for h in history[1:]) < history[0]["val_loss"]
    again = fit_tower(items, impressions, ContentTowerTraining(**TINY))
    first, second = embed_items(fitted.model, fitted.encoder, items), embed_items(again.model, again.encoder, items)
    np.testing.assert_array_equal(np.stack(first["vector"]), np.stack(second["vector"]))
    other = fit_tower(items, impressions, ContentTowerTraining(**{**TINY, "train": {**TINY["train"], "seed": 8}}))
    assert not np.array_equal(
        np.stack(first["vector"]), np.stack(embed_items(other.model, other.encoder, items)["vector"])
    )


def test_vectors_are_unit_norm_and_a_new_item_gets_one_from_content_alone(tiny_log, fitted) -> None:
    _, items, _, new = tiny_log
    assert len(new) > 10
    catalog = embed_items(fitted.model, fitted.encoder, pd.concat([items, new], ignore_index=True))
    np.testing.assert_allclose(np.linalg.norm(np.stack(catalog["vector"]), axis=1), 1.0, atol=1e-5)
    alone = embed_items(fitted.model, fitted.encoder, new.iloc[[3]])  # at publish time: one row, no history
    row = catalog.index[catalog["item_id"] == new["item_id"].iloc[3]][0]
    np.testing.assert_allclose(alone["vector"].iloc[0], catalog["vector"].iloc[row], atol=1e-6)
    assert alone["quality"].iloc[0] == pytest.approx(catalog["quality"].iloc[row], abs=1e-6)
    unseen = new.iloc[[0]].assign(category="never_seen", keywords=[["nor_this"]], content_vector=[None])
    vector = embed_items(fitted.model, fitted.encoder, unseen)["vector"].iloc[0]
    assert np.isfinite(vector).all() and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_unknown_config_keys_are_rejected() -> None:
    with pytest.raises(ValueError, match="extra"):
        ContentTowerTraining(model={"dimm": 8})
    with pytest.raises(ValueError, match="extra"):
        ContentTowerTraining(triplets={"negative": 3})
    with pytest.raises(ValueError, match="extra"):
        ContentTowerTraining(learning_rate=0.1)


def test_the_train_hook_registers_a_version_that_loads_back_with_the_same_vectors(tiny_log) -> None:
    import mlflow

    from pipelines.catalog import Model
    from pipelines.catalog.content import FAMILY
    from pipelines.settings import get_settings
    from pipelines.training.config import TrainRequest
    from pipelines.training.content_tower import train_for_catalog

    store, items, impressions, new = tiny_log
    settings = get_settings()
    shutil.copytree(store.root / "raw", Path(settings.data_dir) / "sim" / "clean")  # as if validated
    request = TrainRequest(dataset="sim", start=WINDOW[0], end=WINDOW[1], train={"seed": 5}, overrides=TINY)
    result = train_for_catalog(settings, Model("content_tower", FAMILY), request)
    assert result["registered_model"] == "coldstart_content_tower" and result["version"] == "1"
    run = mlflow.get_run(result["run_id"])
    assert run.data.tags["lineage.end"] == WINDOW[1].isoformat()
    # the tower's trainer defaults, under the request's trainer knobs, under the overrides' `train`
    assert {k: run.data.params[f"train.{k}"] for k in ("seed", "epochs", "lr")} == {"seed": "5", "epochs": "3",
                                                                                     "lr": "0.003"}  # fmt: skip
    # the same config on the same rows, in memory: the seeded run the registry holds
    local = fit_tower(items, impressions, ContentTowerTraining.from_request(request))
    rows = new.head(20)[["item_id", "category", "keywords", "content_vector"]]
    served = mlflow.pyfunc.load_model("models:/coldstart_content_tower@candidate").predict(rows)
    expected = embed_items(local.model, local.encoder, rows)
    np.testing.assert_allclose(np.stack(served["vector"]), np.stack(expected["vector"]), atol=1e-6)
    np.testing.assert_allclose(served["quality"], expected["quality"], atol=1e-6)
    assert list(served["item_id"]) == list(rows["item_id"])
    again = train_for_catalog(settings, Model("content_tower", FAMILY), request)
    assert again["reused"] and again["version"] == "1"
