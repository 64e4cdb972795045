"""One scoring path: ``RankerCore.score_frame`` (what evaluation and the simulated feed score with) gives what
``RankerCore.rank`` serves, row for row: new items on their content-kNN row under ``content_knn``, on the default
row otherwise, and unknown users on the new-user path."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from pipelines.models import TINY_CONFIGS
from pipelines.serving.policies import PolicyConfig
from pipelines.serving.ranker import RankerCore
from pipelines.training.dataset import FeatureEncoder
from pipelines.training.registry import build_ranker

DIM = 4
KNOWN_USER = {"gender": "f", "age": "25", "region": "r1", "device": "ios", "view_count": 40, "is_new_user": 0}


def content(item: int) -> list[float]:
    """A content vector per item: items 1..10 point one way, 11..20 the other."""
    base = np.array([1.0, 0.2, 0.0, 0.1]) if item <= 10 else np.array([0.0, 0.1, 1.0, 0.3])
    return (base + 0.01 * item).astype(np.float32).tolist()


@pytest.fixture(scope="module")
def wrapper() -> SimpleNamespace:
    """An ESMM (tiny config, random weights: parity needs no training) on a vocabulary of users 1..5, items 1..20."""
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"user_id": rng.integers(1, 6, 200), "item_id": rng.integers(1, 21, 200)})
    rows["author_id"], rows["category"] = rows["item_id"] % 4, rows["item_id"] % 3
    rows["content_vector"] = rows["item_id"].map(content)
    rows = rows.assign(**{k: v for k, v in KNOWN_USER.items()}, exposures_total=rng.integers(0, 500, 200))
    encoder = FeatureEncoder.fit(rows, min_counts={})  # every id in the vocabulary
    torch.manual_seed(0)
    return SimpleNamespace(encoder=encoder, model=build_ranker("esmm", encoder, TINY_CONFIGS["esmm"]))


def known_items(exposures: int = 1000) -> pd.DataFrame:
    ids = np.arange(1, 21)
    return pd.DataFrame({"item_id": ids, "content_vector": [content(i) for i in ids],
                         "exposures_total": np.full(20, exposures)})  # fmt: skip


def frame(users: list[int | None], items: list[int]) -> pd.DataFrame:
    """Rows of (user, item) as evaluation builds them; ``None`` user: one the store does not know (user 777)."""
    rows = []
    for user in users:
        profile = {**KNOWN_USER, "user_id": user} if user is not None else {"user_id": 777, "is_new_user": 1}
        for item in items:
            vector = content(3) if item == 99 else (None if item == 100 else content(item))
            rows.append({**profile, "item_id": item, "author_id": item % 4, "category": item % 3,
                         "content_vector": vector, "exposures_total": 0})  # fmt: skip
    return pd.DataFrame(rows)


class Store:
    """The online store as the bento reads it (``FeastFeatures``): user 1 is known; any other user comes back with
    every feature None (unknown); items as in :func:`frame`."""

    def user(self, user_id: int) -> tuple[dict, bool]:
        if user_id == 1:
            return dict(KNOWN_USER), True
        return {k: None for k in KNOWN_USER}, False

    def items(self, item_ids: list[int]) -> pd.DataFrame:
        return frame([1], item_ids).drop(columns=[*KNOWN_USER, "user_id"])


def core(wrapper: SimpleNamespace, policy: str = "content_knn", **config) -> RankerCore:
    fresh = SimpleNamespace(encoder=wrapper.encoder, model=build_ranker("esmm", wrapper.encoder, TINY_CONFIGS["esmm"]))
    fresh.model.load_state_dict(wrapper.model.state_dict())  # each core appends rows to its own tables
    return RankerCore(fresh, Store(), known_items(), PolicyConfig(new_item_embedding=policy, **config))


def test_score_frame_scores_a_new_item_on_its_content_knn_row_as_rank_does(wrapper) -> None:
    served = core(wrapper)
    rows = frame([1, None], [2, 99, 100])  # a known item, a new one with content, a new one without
    scored = served.score_frame(rows)
    assert scored["item_oov"].tolist() == [False, True, True] * 2
    assert scored["item_knn_row"].tolist() == [False, True, False] * 2
    assert scored["item_default_row"].tolist() == [False, False, True] * 2
    assert scored["user_oov"].tolist() == [False] * 3 + [True] * 3
    assert scored["new_user_path"].tolist() == [False] * 3 + [True] * 3
    for user, first in ((1, 0), (777, 3)):  # 777: a user the store does not know
        answer = served.rank(user, [2, 99, 100])
        assert answer["new_user"] == (user == 777)
        by_id = {i["item_id"]: i for i in answer["items"]}
        for offset, item in enumerate((2, 99, 100)):
            for task in ("p_ctr", "p_cvr", "p_ctcvr"):
                assert by_id[item][task] == pytest.approx(scored[task].iloc[first + offset], rel=1e-6)
        assert by_id[99]["policies"][0] == "new_item_embedding"
        assert by_id[100]["policies"][0] == "default_item_embedding"


def test_the_default_policy_scores_new_items_on_row_zero_like_the_raw_model(wrapper) -> None:
    rows = frame([1], [2, 99, 100])
    default = core(wrapper, policy="default").score_frame(rows)
    assert default["item_knn_row"].sum() == 0 and default["item_default_row"].tolist() == [False, True, True]
    with torch.no_grad():
        raw = wrapper.model(wrapper.encoder.transform(rows))["p_ctr"].numpy()
    np.testing.assert_allclose(default["p_ctr"], raw, rtol=1e-6)
    knn = core(wrapper).score_frame(rows)
    assert knn["p_ctr"].iloc[1] != pytest.approx(default["p_ctr"].iloc[1])  # the borrowed row changes the score
    np.testing.assert_allclose(knn["p_ctr"].iloc[[0, 2]], default["p_ctr"].iloc[[0, 2]], rtol=1e-6)


def test_chunks_change_nothing_and_a_new_item_gets_one_row(wrapper) -> None:
    rows = frame([1, 2, None, 3], [99, 2, 100, 5])
    whole = core(wrapper).score_frame(rows)
    chunked_core = core(wrapper)
    chunked = chunked_core.score_frame(rows, chunk=3)
    pd.testing.assert_frame_equal(whole, chunked, rtol=1e-6)
    assert list(chunked_core._extra) == [99]  # appended once, reused by later chunks
    capped = core(wrapper, max_new_item_rows=0).score_frame(rows)  # no room: the default row, as rank does
    assert capped["item_knn_row"].sum() == 0 and capped["item_default_row"].sum() == 8
    assert core(wrapper).score_frame(rows.iloc[:0]).columns.tolist() == whole.columns.tolist()


def test_evaluation_rows_of_users_the_store_does_not_know_take_the_new_user_path() -> None:
    from pipelines.evaluation.rankers import serving_users

    recent = pd.array([[4, 5], [6]], dtype=pd.ArrowDtype(pa.list_(pa.int64())))  # as training sets carry lists
    rows = pd.DataFrame({"user_id": [1, 2], "view_count": [3.0, None], "gender": ["f", None],
                         "recent_item_ids": recent, "is_new_user": [0.0, None]})  # fmt: skip
    assert serving_users(rows.iloc[:1].copy(), ["view_count"]) == 0
    assert serving_users(rows, ["view_count", "gender", "recent_item_ids", "is_new_user"]) == 1
    assert rows["is_new_user"].tolist() == [0.0, 1.0]
    assert rows["recent_item_ids"].isna().tolist() == [False, True]  # as serving drops an unknown user's lists


class CategoryTower:
    """A content tower stand-in whose space is the category alone (one-hot of ``category``): a new item's tower
    neighbours are its category's items, whatever its raw content vector says."""

    version = "7"

    def __init__(self) -> None:
        self.seen: list[list[int]] = []

    def embed(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        self.seen.append(rows["item_id"].astype(int).tolist())
        return np.eye(3, dtype=np.float32)[rows["category"].astype(int).to_numpy()], np.zeros(len(rows), np.float32)


def test_new_items_take_their_tower_neighbours_and_fall_back_to_raw_vectors_without_a_tower(wrapper) -> None:
    items = known_items().assign(category=lambda f: f["item_id"] % 3)
    rows = frame([1], [2, 99])  # 99: raw content like item 3's (items 1..10), category 0 (items 3, 6, ..., 18)
    category_0 = [3, 6, 9, 12, 15, 18]

    def served(tower=None, **config) -> RankerCore:
        fresh = SimpleNamespace(encoder=wrapper.encoder,
                                model=build_ranker("esmm", wrapper.encoder, TINY_CONFIGS["esmm"]))  # fmt: skip
        fresh.model.load_state_dict(wrapper.model.state_dict())
        return RankerCore(fresh, Store(), items, PolicyConfig(knn_k=6, **config), tower=tower)

    def borrowed(ranker: RankerCore) -> tuple[np.ndarray, np.ndarray]:
        """The row appended for item 99, and the mean of category 0's rows."""
        ranker.score_frame(rows)
        table, vocab = ranker._tables[0].weight.detach().numpy(), wrapper.encoder.vocab["item_id"]
        return table[ranker._extra[99]], table[[vocab[str(i)] for i in category_0]].mean(0)

    tower = CategoryTower()
    with_tower = served(tower)
    assert with_tower.knn_vectors == "tower" and tower.seen[0] == list(range(1, 21))  # the index: known items
    row, expected = borrowed(with_tower)
    np.testing.assert_allclose(row, expected, rtol=1e-5)
    assert tower.seen[-1] == [99]  # the query: the new item, embedded by the same tower
    assert with_tower.rank(1, [2, 99])["knn_vectors"] == "tower"

    raw = served()  # no champion tower: the raw content vectors
    assert raw.knn_vectors == "raw" and raw.rank(1, [2])["knn_vectors"] == "raw"
    row, expected = borrowed(raw)
    assert not np.allclose(row, expected, rtol=1e-5)
    asked_raw = served(CategoryTower(), knn_vectors="raw")
    assert asked_raw.knn_vectors == "raw" and asked_raw.tower is None
