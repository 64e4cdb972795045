"""The content tower on MovieLens-1M and MeLU with its vectors: content, training side, new items, the pyfunc."""

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.data.movielens import MeluSplitConfig, join_rows, load_ml1m, melu_split, title_tokens, tower_content
from pipelines.models.melu import MeLUConfig
from pipelines.training.config import TrainConfig
from pipelines.training.content_data import TripletConfig
from pipelines.training.content_tower import ContentTowerTraining
from pipelines.training.melu import MeluEncoder, build_melu, fit_melu, tasks_of
from pipelines.training.ml1m_tower import MovieLensTowerConfig, engagement, fit_ml1m_tower, training_rows

TINY_TOWER = MovieLensTowerConfig(
    tower=ContentTowerTraining(
        triplets=TripletConfig(min_clicks=3, min_co_users=2, max_triplets=4000, max_keywords=16),
        train=TrainConfig(epochs=6, batch_size=256, lr=5e-3, patience=2, threads=1),
    )
)
TINY_MELU = MeLUConfig(embed_dim=8, hidden=[16, 16], local_lr=5e-3, meta_lr=1e-3, tasks_per_batch=16)


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    """MeLU's rows with 600 warm users (every evaluation row kept): a small training side, the real test side."""
    users, items, ratings = load_ml1m()
    full = join_rows(melu_split(users, items, ratings, MeluSplitConfig()), users, items)
    warm_users = np.sort(full.loc[full["scenario"] == "warm", "user_id"].unique())[:600]
    return full[(full["scenario"] != "warm") | full["user_id"].isin(warm_users)].reset_index(drop=True)


@pytest.fixture(scope="module")
def tower(rows):
    return fit_ml1m_tower(rows, TINY_TOWER, seed=11)


def test_tower_content_has_title_tokens_genres_and_decade() -> None:
    items = pd.DataFrame(
        {"item_id": [1, 2], "title": ["American President, The (1995)", "Heat"], "release_year": [1995, 1998],
         "content_vector": [np.eye(18, dtype=np.float32)[4] + np.eye(18, dtype=np.float32)[13],
                            np.eye(18, dtype=np.float32)[0]]}
    )  # fmt: skip
    content = tower_content(items)
    assert content["keywords"][0] == ["decade:1990", "Comedy", "Romance", "american", "president"]
    assert content["keywords"][1] == ["decade:1990", "Action", "heat"]
    assert content["category"].tolist() == ["Comedy", "Action"]
    assert content["content_vector"][1][-1] == pytest.approx(0.8)  # the year, in decades from 1990
    assert title_tokens("Star Wars: Episode IV - A New Hope (1977)") == ["star", "wars", "episode", "new", "hope"]


def test_real_titles_give_tokens_and_every_item_a_decade() -> None:
    _, items, _ = load_ml1m()
    content = tower_content(items)
    toy = content["keywords"][items.index[items["title"] == "Toy Story"][0]]
    assert {"toy", "story", "decade:1990", "Animation"} <= set(toy)
    assert all(k[0].startswith("decade:") for k in content["keywords"])
    assert (content["category"] == items["category"]).all()  # the dataset's first genre


def test_tower_trains_on_warm_ratings_and_embeds_new_items_from_content(rows, tower) -> None:
    assert tower.metrics["val_triplet_accuracy"] > 0.5
    new_items = rows.loc[rows["scenario"] == "new_item"].drop_duplicates("item_id")
    assert not new_items["item_id"].isin(training_rows(rows)["item_id"]).any()
    vectors = tower.embed(new_items)
    assert vectors.shape == (len(new_items), tower.dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert len(np.unique(vectors.round(5), axis=0)) > len(new_items) // 2  # content tells them apart


def test_tower_never_sees_evaluation_ratings(rows, tower) -> None:
    clicks = engagement(training_rows(rows), 4.0)
    warm = rows[rows["scenario"] == "warm"]
    warm_pairs = set(zip(warm["user_id"], warm["item_id"], strict=True))
    assert set(zip(clicks["user_id"], clicks["item_id"], strict=True)) <= warm_pairs
    # Flip every evaluation rating (5 <-> 1) and drop a third of those rows: a tower that read them would change.
    held = rows["scenario"] != "warm"
    changed = rows.assign(rating=np.where(held, 6 - rows["rating"], rows["rating"]))
    changed = changed[~held | (np.arange(len(rows)) % 3 != 0)]
    again = fit_ml1m_tower(changed, TINY_TOWER, seed=11)
    for name, weight in tower.model.state_dict().items():
        assert torch.equal(weight, again.model.state_dict()[name]), name


@pytest.mark.slow  # 12-37 s: a tower, one MeLU epoch and an MLflow registration
def test_melu_with_tower_predicts_a_new_item_it_never_saw(rows, tmp_path: Path) -> None:
    cfg = TINY_MELU.model_copy(update={"content_tower": True})
    encoder, model = build_melu(rows, cfg, seed=3, tower_cfg=TINY_TOWER)
    train_tasks = tasks_of(training_rows(rows), encoder)["warm"][:48]
    fit_melu(model, train_tasks, epochs=1, seed=3)
    user = rows[rows["scenario"] == "new_item"]
    user = user[user["user_id"] == user["user_id"].iloc[0]]
    support, query = user[user["role"] == "support"], user[user["role"] == "query"]
    assert not query["item_id"].isin(training_rows(rows)["item_id"]).any()
    predicted = model.predict(encoder.transform(support), encoder.transform(query))
    assert predicted.shape == (len(query),) and torch.isfinite(predicted).all()
    # The vector comes from the item's content: another title gives another prediction.
    renamed = model.predict(encoder.transform(support), encoder.transform(query.assign(title="Toy Story")))
    assert not torch.allclose(predicted, renamed)
    # The registered pyfunc carries the tower and scores the same rows through the same encoder call.
    served = _pyfunc_predictions(model, cfg, encoder, support, query, tmp_path)
    assert np.allclose(served, predicted.numpy(), atol=1e-5)


def test_melu_without_tower_keeps_the_paper_inputs(rows) -> None:
    encoder, model = build_melu(rows, TINY_MELU, seed=3)
    assert encoder.tower is None and model.dense is None
    assert "dense" not in encoder.transform(rows.head(3))


def _pyfunc_predictions(model, cfg, encoder: MeluEncoder, support, query, tmp_path: Path) -> np.ndarray:
    from pipelines.catalog import TRAINING_EXPERIMENT
    from pipelines.settings import get_settings, use_mlflow_experiment
    from pipelines.training.melu import _register

    use_mlflow_experiment(get_settings(home=tmp_path / "home"), TRAINING_EXPERIMENT)  # as train_melu does
    columns = ["gender", "age", "occupation", "region", "release_year", "item_id", "content_vector", "title",
               "rating", "role"]  # fmt: skip
    request = pd.concat([support.assign(role="support"), query.assign(role="candidate")])[columns]
    with mlflow.start_run():
        version = _register(model, cfg, encoder, request.reset_index(drop=True))
    loaded = mlflow.pyfunc.load_model(f"models:/coldstart_melu/{version}")
    return loaded.predict(request.reset_index(drop=True))["rating"].to_numpy()
