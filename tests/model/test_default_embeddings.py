"""Learned default embeddings (MODELS.md §6): ids under a minimum count fold into row 0, id dropout looks a seeded
share of training rows up as row 0, and row 0, which scores every unseen user, item and author, ends up trained:
it moves in training (it did not before) and scores the new-item slice of a simulated day calibrated."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.models.esmm import ESMM, ESMMConfig
from pipelines.training.dataset import ID_FIELDS, SPARSE, FeatureEncoder, drop_ids
from pipelines.training.trainer import TrainConfig, Trainer

from ..conftest import run_sim
from .test_training import synthetic_frame

ID_COLUMNS = [SPARSE.index(c) for c in ID_FIELDS]
NO_DEFAULT_TRAINING = {"min_count_user": 1, "min_count_item": 1, "min_count_author": 1, "id_dropout": 0.0}


def hand_built() -> pd.DataFrame:
    """Six impressions: user 1 three times, items 10 (3x), 12 (as 12.0 and "12"), 11 once; author 7 once."""
    return pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2, 3],
            "item_id": pd.Series([10, 10, 10, 11, 12.0, "12"], dtype=object),
            "author_id": [5.0, 5.0, 6.0, 6.0, 7.0, np.nan],
            "category": ["a", "a", "a", "a", "a", "b"],
            "recent_item_ids": [np.array([11, 10, 999])] + [np.array([10])] * 5,
        }
    )


def test_ids_under_the_minimum_count_fold_into_row_0() -> None:
    encoder = FeatureEncoder.fit(hand_built(), min_counts={"user_id": 3, "item_id": 2, "author_id": 2})
    assert encoder.vocab["user_id"] == {"1": 1}  # users 2 (2 rows) and 3 (1 row) fold
    assert encoder.vocab["item_id"] == {"10": 1, "12": 2}  # 12.0 and "12" count as one id: 2 rows
    assert encoder.vocab["author_id"] == {"5": 1, "6": 2}  # 7 folds; a missing author counts for nothing
    assert encoder.vocab["category"] == {"a": 1, "b": 2}  # fields without a minimum keep every value
    probe = pd.DataFrame({"user_id": [2, 99], "item_id": [11, 999], "author_id": [7, 99], "category": ["b", "b"]})
    sparse = encoder.transform(probe)["sparse"]
    assert torch.equal(sparse[0, ID_COLUMNS], sparse[1, ID_COLUMNS])  # a folded id is an unseen id
    assert (sparse[:, ID_COLUMNS] == 0).all()
    # In the recent-click history a folded item (11) is left out like an unseen one (999): 0, the padding.
    assert encoder.transform(hand_built())["seq"][0, :4].tolist() == [0, 1, 0, 0]
    everything = FeatureEncoder.fit(hand_built(), min_counts={})
    assert len(everything.vocab["user_id"]) == 3 and len(everything.vocab["item_id"]) == 3


def test_fit_defaults_to_the_train_config_and_the_cut_travels_with_the_encoder(tmp_path: Path) -> None:
    encoder = FeatureEncoder.fit(hand_built())
    assert encoder.min_counts == TrainConfig().min_counts
    assert encoder.vocab["item_id"] == {}  # nothing here reaches the default counts
    encoder.save(tmp_path / "encoder.json")
    assert FeatureEncoder.load(tmp_path / "encoder.json") == encoder
    # An encoder saved before the minimum counts existed (every training id in its vocabulary) still loads.
    old = FeatureEncoder.fit(hand_built(), min_counts={})
    old.save(tmp_path / "old.json")
    text = (tmp_path / "old.json").read_text().replace(', "min_counts": {}', "")
    (tmp_path / "old.json").write_text(text)
    assert "min_counts" not in text and FeatureEncoder.load(tmp_path / "old.json") == old


def test_id_dropout_zeroes_a_seeded_share_of_the_id_fields_only() -> None:
    n, p = 20_000, 0.1
    batch = {"sparse": torch.randint(1, 50, (n, len(SPARSE))), "click": torch.ones(n)}
    before = batch["sparse"].clone()
    dropped = drop_ids(batch, p, torch.Generator().manual_seed(1))
    assert torch.equal(batch["sparse"], before)  # the caller's tensors are left alone
    others = [i for i in range(len(SPARSE)) if i not in ID_COLUMNS]
    assert torch.equal(dropped["sparse"][:, others], before[:, others]) and dropped["click"] is batch["click"]
    zero = dropped["sparse"][:, ID_COLUMNS] == 0
    kept = dropped["sparse"][:, ID_COLUMNS] == before[:, ID_COLUMNS]
    assert (zero | kept).all()
    # each field drops independently at rate p: within 5 binomial standard errors (0.01) of 0.1
    assert np.allclose(zero.float().mean(0).numpy(), p, atol=5 * math.sqrt(p * (1 - p) / n))
    assert 0 < zero.all(1).float().mean() < 0.01  # all three at once only ~p³ of rows
    again = drop_ids(batch, p, torch.Generator().manual_seed(1))
    assert torch.equal(again["sparse"], dropped["sparse"])
    assert not torch.equal(drop_ids(batch, p, torch.Generator().manual_seed(2))["sparse"], dropped["sparse"])
    assert drop_ids(batch, 0.0, torch.Generator()) is batch


class Recording(ESMM):
    """ESMM that records, per forward, whether it was training and the share of id fields looked up as row 0."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.seen: list[tuple[bool, torch.Tensor]] = []

    def forward(self, batch):
        self.seen.append((self.training, (batch["sparse"][:, ID_COLUMNS] == 0).float().mean(0)))
        return super().forward(batch)


def recorded(seed: int, id_dropout: float) -> list[tuple[bool, torch.Tensor]]:
    frame = synthetic_frame(1200)
    encoder = FeatureEncoder.fit(frame, min_counts={})  # every id known: a 0 can only come from the dropout
    data = encoder.transform(frame)
    torch.manual_seed(0)
    model = Recording(encoder.spec(), ESMMConfig(embed_dim=4, tower=[8]))
    Trainer(model, TrainConfig(epochs=2, batch_size=200, seed=seed, threads=1, id_dropout=id_dropout)).fit(data, data)
    return model.seen


def test_id_dropout_is_on_in_training_only_and_seeded_by_the_run() -> None:
    seen = recorded(seed=3, id_dropout=0.3)
    training = torch.stack([share for is_training, share in seen if is_training])
    validation = torch.stack([share for is_training, share in seen if not is_training])
    assert len(training) == 12 and len(validation) == 2  # 6 batches an epoch, one validation pass an epoch
    assert (validation == 0).all()  # evaluation sees every id as it is
    assert 0.2 < float(training.mean()) < 0.4
    rerun, other_seed = recorded(seed=3, id_dropout=0.3), recorded(seed=4, id_dropout=0.3)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(seen, rerun, strict=True))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(seen, other_seed, strict=True))


def row_0(model: ESMM) -> torch.Tensor:
    """Row 0 of the user, item and author tables, [3, d]."""
    tables = model.encoder.embedding.tables
    return torch.stack([tables[i].weight[0].detach().clone() for i in ID_COLUMNS])


@pytest.mark.parametrize(
    ("overrides", "moves"),
    [
        ({"min_count_user": 16, "min_count_item": 11, "min_count_author": 101, "id_dropout": 0.0}, True),
        ({**NO_DEFAULT_TRAINING, "id_dropout": 0.05}, True),
        (NO_DEFAULT_TRAINING, False),
    ],
    ids=["min_count_alone", "id_dropout_alone", "neither"],
)
def test_row_0_learns_from_either_mechanism_alone(overrides: dict, moves: bool) -> None:
    frame = synthetic_frame(1500)  # ~7 rows per user, 5 per item, 50 per author: the counts above fold most
    cfg = TrainConfig(epochs=1, batch_size=256, seed=3, threads=1, **overrides)
    encoder = FeatureEncoder.fit(frame, min_counts=cfg.min_counts)
    data = encoder.transform(frame)
    torch.manual_seed(0)
    model = ESMM(encoder.spec(), ESMMConfig(embed_dim=4, tower=[8]))
    before = row_0(model)
    Trainer(model, cfg).fit(data, data)
    changed = (row_0(model) - before).norm(dim=1)
    assert bool((changed > 0).all()) is moves, changed


# --- a simulated window: train on its first days, score the last (held out) -----------------------------------


def simulated_frame(store) -> pd.DataFrame:
    """The simulator's impressions with profile and content columns, the true click probability, and the item
    stats a Feast snapshot of the day before carries (exposures, smoothed CTR, age; none for items published
    that day): the new-item signals training sets have, computed in pandas instead of through Feast."""
    impressions = store.read_range("impressions").to_pandas()
    truth = store.read_range("impression_truth", layer="truth", columns=["request_id", "position", "p_click"])
    users = store.read_range("users").to_pandas().drop_duplicates("user_id", keep="last")
    items = store.read_range("items").to_pandas().drop_duplicates("item_id", keep="last")
    frame = impressions.merge(truth.to_pandas(), on=["request_id", "position"], how="left")
    frame = frame.merge(users, on="user_id", how="left").merge(items.drop(columns="keywords"), on="item_id", how="left")
    frame["day"] = frame["event_time"].dt.floor("D")
    daily = frame.groupby(["item_id", "day"], as_index=False).agg(shown=("click", "size"), clicked=("click", "sum"))
    by_item = daily.groupby("item_id")
    daily["exposures_total"] = by_item["shown"].cumsum() - daily["shown"]  # days before this one only
    daily["clicks_before"] = by_item["clicked"].cumsum() - daily["clicked"]
    frame = frame.merge(daily.drop(columns=["shown", "clicked"]), on=["item_id", "day"], how="left")
    prior = frame["click"].mean()
    frame["ctr_smoothed_7d"] = (frame["clicks_before"] + 100 * prior) / (frame["exposures_total"] + 100)
    frame["exposures_7d"] = frame["exposures_total"]
    frame["age_hours"] = (frame["day"] - frame["publish_time"]).dt.total_seconds() / 3600
    fresh = frame["publish_time"] >= frame["day"]  # no snapshot yet: missing, as Feast returns it
    frame.loc[fresh, ["exposures_total", "exposures_7d", "ctr_smoothed_7d", "age_hours"]] = np.nan
    since_signup = (frame["event_time"] - frame["signup_time"]).dt.total_seconds() / 86400
    frame["days_since_signup"], frame["is_new_user"] = since_signup.clip(lower=0), (since_signup < 7).astype(float)
    return frame.sort_values("event_time", kind="stable").reset_index(drop=True)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Five simulated days (3,000 users): three train, one validates, the last is held out; one ESMM trained with
    the defaults and one with no default training (every id in the vocabulary, no dropout: the old behaviour).

    Three epochs, the last one kept: on ~90k rows early stopping's pick between two noisy validation losses
    sometimes kept epoch 1, before row 0 had settled (new-item pCTR / true CTR 1.45 instead of 1.21)."""
    store, _, _ = run_sim(tmp_path_factory.mktemp("sim_default_embeddings"), days=5, users=3000)
    frame = simulated_frame(store)
    days = frame["event_time"].dt.date
    dates = sorted(days.unique())
    train, val, held_out = frame[days < dates[3]], frame[days == dates[3]], frame[days == dates[4]]
    out = {"train": train, "held_out": held_out}
    for name, overrides in (("defaults", {}), ("old", NO_DEFAULT_TRAINING)):
        # one thread: two OpenMP threads spin against the other jobs of a shared 2-core machine
        cfg = TrainConfig(epochs=3, batch_size=512, seed=3, threads=1, **overrides)
        encoder = FeatureEncoder.fit(train, min_counts=cfg.min_counts)
        torch.manual_seed(3)
        model = ESMM(encoder.spec(), ESMMConfig(embed_dim=8, tower=[32, 16]))
        before = row_0(model)
        Trainer(model, cfg).fit(encoder.transform(train), encoder.transform(val))
        model.eval()
        with torch.no_grad():
            p_ctr = model(encoder.transform(held_out))["p_ctr"].numpy().astype(np.float64)
        out[name] = {"encoder": encoder, "model": model, "row_0_moved": (row_0(model) - before).norm(dim=1),
                     "p_ctr": p_ctr}  # fmt: skip
    return out


def test_row_0_of_user_item_and_author_moves_with_the_defaults_and_not_without(simulated) -> None:
    moved = simulated["defaults"]["row_0_moved"]
    # init rows have norm ~0.03 (std 0.01, d=8); trained, each row 0 moved further than that (0.10, 0.36, 0.17)
    assert (moved > 0.05).all(), moved
    assert (simulated["old"]["row_0_moved"] == 0).all()  # the bug: no gradient ever reaches row 0


def test_a_below_min_count_item_scores_like_an_unseen_one(simulated) -> None:
    encoder, model = simulated["defaults"]["encoder"], simulated["defaults"]["model"]
    counts = simulated["train"]["item_id"].value_counts()
    rare = counts[counts < TrainConfig().min_count_item].index[0]
    rows = simulated["held_out"].head(20)
    scores = []
    for item in (rare, 10**9):  # a folded item, one that never existed
        with torch.no_grad():
            scores.append(model(encoder.transform(rows.assign(item_id=item)))["p_ctr"])
    assert torch.equal(scores[0], scores[1])


def calibration(p_ctr: np.ndarray, rows: pd.DataFrame, mask: np.ndarray) -> tuple[float, float]:
    """Mean predicted pCTR over the slice divided by its observed CTR, and by its true (simulated) CTR."""
    predicted = p_ctr[mask].mean()
    return predicted / rows["click"].to_numpy()[mask].mean(), predicted / rows["p_click"].to_numpy()[mask].mean()


def test_the_new_item_and_new_user_slices_are_calibrated(simulated) -> None:
    """Held-out rows of items (users) the training days never showed are all scored on row 0.

    Bands: over six runs at this size (simulator seeds 11, 12 x training seeds 3, 4, 5) the defaults' new-item
    pCTR / true CTR ranged 0.92-1.21 (the overall calibration of one held-out day alone ranged 0.95-1.11);
    against observed clicks (~100 on new items) add two binomial standard errors (±20%). The platform's
    benchmark goal is 0.9-1.1 (at 6 training days and 12k users the defaults gave 1.05). The old behaviour (row
    0 at its random init) over-predicted new items 2.5-2.9x on the same runs. New users: 0.85-1.07 against
    1.25-1.45 for the old behaviour (row 0 of the user table, and the history-less UCBE/profile path).
    """
    train, held_out = simulated["train"], simulated["held_out"]
    new_item = ~held_out["item_id"].isin(train["item_id"].unique()).to_numpy()
    new_user = ~held_out["user_id"].isin(train["user_id"].unique()).to_numpy()
    assert 0.05 < new_item.mean() < 0.25 and held_out["click"].to_numpy()[new_item].sum() >= 50
    observed, true = calibration(simulated["defaults"]["p_ctr"], held_out, new_item)
    old_observed, old_true = calibration(simulated["old"]["p_ctr"], held_out, new_item)
    assert 0.8 <= true <= 1.3 and 0.7 <= observed <= 1.5, (true, observed)
    assert old_true > 1.5  # the test can fail: the old behaviour is far outside the band
    assert abs(math.log(true)) < abs(math.log(old_true)) and abs(math.log(observed)) < abs(math.log(old_observed))
    user_observed, user_true = calibration(simulated["defaults"]["p_ctr"], held_out, new_user)
    assert 0.8 <= user_true <= 1.25 and 0.7 <= user_observed <= 1.4, (user_true, user_observed)
    assert abs(math.log(user_true)) < abs(math.log(calibration(simulated["old"]["p_ctr"], held_out, new_user)[1]))
