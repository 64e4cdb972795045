"""The simulator's published content: realistic raw signals that recover the hidden truth only in part.

The probes below are what a content-based cold-start method can get out of the ``items`` table: a cosine kNN's
same-topic recall@10 and a linear probe's rank correlation with the hidden quality. ``content_figures`` prints
them beside the old content vector (the topic's embedding plus N(0, 0.6) noise), which encoded the answer.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy import stats

from pipelines.data.contract import Store
from pipelines.data.sim_config import CATEGORIES, SimulatorConfig
from pipelines.data.sim_content import ContentModel

from ..conftest import run_sim
from .test_simulator import digest

SMALL = {"days": 2, "users": 8000, "seed": 5}
# Truth the platform can legitimately see: experiment groups are logged in ``assignments``, counters are counts of
# logged impressions, and a user's newness follows from ``signup_time``.
OBSERVABLE_TRUTH = {"treatment", "author_treatment", "exposures", "clicks", "early_exposures", "is_new_user"}


def same_topic_recall(vectors: np.ndarray, topic: np.ndarray, k: int = 10) -> float:
    """Mean share of each item's ``k`` nearest items by cosine (itself excluded) that share its topic."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argpartition(-sims, k, axis=1)[:, :k]
    return float((topic[top] == topic[:, None]).mean())


def quality_spearman(vectors: np.ndarray, quality: np.ndarray) -> float:
    """Spearman of a least-squares probe's prediction with the quality, fitted on one half, scored on the other."""
    x = np.hstack([vectors, np.ones((len(vectors), 1))])
    half = len(x) // 2
    w = np.linalg.lstsq(x[:half], quality[:half], rcond=None)[0]
    return float(stats.spearmanr(x[half:] @ w, quality[half:]).statistic)


def old_vectors(topic: np.ndarray, n_topics: int, dim: int, seed: int = 0) -> np.ndarray:
    """The content vector as it used to be: the topic's N(0, I) embedding plus N(0, 0.6) noise."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_topics, dim))[topic] + rng.normal(0.0, 0.6, (len(topic), dim))


def content_figures(store: Store) -> dict[str, float]:
    """The probes on a run's ``items`` table and truth, and on the old vector of the same items."""
    items = store.read_range("items").to_pandas().sort_values("item_id", ignore_index=True)
    truth = pq.read_table(store.root / "truth" / "item_truth.parquet").to_pandas().set_index("item_id")
    truth = truth.loc[items["item_id"]].reset_index()
    vectors = np.stack(items["content_vector"].to_numpy())
    topic, quality = truth["topic"].to_numpy(), truth["quality"].to_numpy()
    old = old_vectors(topic, int(topic.max()) + 1, vectors.shape[1])
    return {
        "items": len(items),
        "chance_recall@10": float(((np.bincount(topic) / len(topic)) ** 2).sum()),
        "recall@10_now": same_topic_recall(vectors, topic),
        "recall@10_old": same_topic_recall(old, topic),
        "quality_spearman_now": quality_spearman(vectors, quality),
        "quality_spearman_old": quality_spearman(old, quality),
        "category_is_topic": float((items["category"].map(CATEGORIES.index) == topic).mean()),
    }


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("content")
    store, cfg, _ = run_sim(root, **SMALL)
    return store, cfg, content_figures(store)


def test_content_vector_recovers_the_topic_only_in_part(small_run) -> None:
    _, _, fig = small_run
    assert fig["items"] > 1500
    assert fig["recall@10_old"] > 0.9, "the probe finds the topic in the old vector"
    assert fig["recall@10_now"] > 3 * fig["chance_recall@10"]
    assert fig["recall@10_now"] < fig["recall@10_old"] - 0.3


def test_content_vector_predicts_quality_weakly(small_run) -> None:
    _, _, fig = small_run
    assert 0.08 < fig["quality_spearman_now"] < 0.45
    # The old vector had no quality in it, only the topics' chance differences in mean quality.
    assert abs(fig["quality_spearman_old"]) < 0.2


def test_items_table_keeps_the_contract_and_unit_vectors(small_run) -> None:
    store, cfg, fig = small_run
    assert abs(fig["category_is_topic"] - cfg.category_topic_share) < 0.04
    items = store.read_range("items")
    assert str(items.schema.field("content_vector").type) == "list<item: float>"
    vectors = np.stack(items.column("content_vector").to_pandas().to_numpy())
    assert vectors.shape[1] == cfg.content_dim
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def _draw(n: int, **overrides):
    """Content of ``n`` items over 16 topics and 50 authors, straight from the model (no traffic)."""
    cfg = SimulatorConfig(**{"seed": 3, **overrides})
    rng = np.random.default_rng(1)
    topic = rng.integers(0, cfg.n_topics, n)
    author = rng.integers(0, 50, n)
    author_topic = rng.integers(0, cfg.n_topics, 50)
    model = ContentModel(cfg)
    return model, topic, author, model.describe(topic, rng.normal(size=n), author, author_topic)


@pytest.mark.parametrize("share", [1.0, 0.8, 0.5])
def test_category_is_the_topics_for_the_configured_share(share: float) -> None:
    n = 4000
    _, topic, _, content = _draw(n, category_topic_share=share)
    hits = int((content.category == topic).sum())
    assert hits == n if share == 1.0 else stats.binomtest(hits, n, share).pvalue > 1e-3


def test_keywords_mix_sources_and_no_word_names_a_topic() -> None:
    model, topic, author, content = _draw(6000)
    rows = pd.DataFrame({"topic": topic, "word": content.keywords}).explode("word")
    topics_per_word = rows.groupby("word")["topic"].nunique()
    frequent = rows["word"].value_counts() >= 20
    assert (topics_per_word[frequent[frequent].index] >= 2).all(), "a frequent word is used by one topic only"
    # P(no topic word among 4 draws) = 0.5^4; P(one of the author's tags) = 1 - 0.75^4; generic likewise.
    topical = set(model.words[model.topic_words.ravel()])
    generic = set(model.words[model.generic_offset : model.habit_offset])
    own_tags = [set(model.words[model.habit_offset + model.a_habits[a]]) for a in author]
    no_topic = np.mean([not topical & set(k) for k in content.keywords])
    with_tag = np.mean([bool(t & set(k)) for t, k in zip(own_tags, content.keywords, strict=True)])
    with_generic = np.mean([bool(generic & set(k)) for k in content.keywords])
    assert 0.04 < no_topic < 0.09 and 0.6 < with_tag < 0.75 and 0.6 < with_generic < 0.75
    assert max(len(k) for k in content.keywords) <= SimulatorConfig().keywords_per_item


def test_content_dim_and_latent_are_configurable() -> None:
    _, _, _, content = _draw(100, content_dim=7, content_latent_dim=5, content_hidden_dim=9)
    assert content.vectors.shape == (100, 7) and content.vectors.dtype == np.float32


def _aligned(store) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """Each platform-readable table beside the hidden truth of its rows."""
    read = lambda t: store.read_range(t).to_pandas()  # noqa: E731
    item_truth = pq.read_table(store.root / "truth" / "item_truth.parquet").to_pandas().set_index("item_id")
    user_truth = pq.read_table(store.root / "truth" / "user_truth.parquet").to_pandas().set_index("user_id")
    user_truth["top_interest"] = np.stack(user_truth.pop("interest").to_numpy()).argmax(axis=1)
    out = []
    for table, key, truth in (("items", "item_id", item_truth), ("publishes", "item_id", item_truth),
                              ("users", "user_id", user_truth)):  # fmt: skip
        raw = read(table)
        out.append((table, raw, truth.loc[raw[key]].reset_index(drop=True)))
    impression_truth = store.read_range("impression_truth", layer="truth").to_pandas()
    out.append(("impressions", read("impressions"), impression_truth))  # row-aligned (see test_simulator)
    return out


def _codes(column: pd.Series) -> pd.Series:
    """A scalar column as numbers: category names as their topic index, other strings and times as codes."""
    if column.dtype == object and column.isin(CATEGORIES).all():
        return column.map(CATEGORIES.index)
    if column.dtype == object or str(column.dtype).startswith("datetime"):
        return pd.Series(pd.factorize(column)[0], index=column.index)
    return column.astype(float)


def test_no_platform_column_hands_out_hidden_truth(small_run) -> None:
    store, _, _ = small_run
    for table, raw, truth in _aligned(store):
        # Columns in both tables are the keys the truth is aligned on.
        hidden = [c for c in truth.columns if c not in OBSERVABLE_TRUTH and c not in raw.columns]
        for name in raw.columns:
            if isinstance(raw[name].iloc[0], np.ndarray | list):
                continue  # list columns: the keyword and content-vector probes above
            r = _codes(raw[name]).to_numpy()
            for secret in hidden:
                s = truth[secret].astype(float).to_numpy()
                assert not np.array_equal(r, s), f"{table}.{name} equals {secret}"
                pair = pd.DataFrame({"r": r, "s": s})
                for a, b in (("r", "s"), ("s", "r")):
                    if pair[a].nunique() <= len(pair) // 20:  # a low-cardinality column that would label the other
                        assert pair.groupby(a)[b].nunique().max() > 1, (
                            f"{table}.{name} and {secret}: one labels the other"
                        )


def test_content_knobs_change_the_items_table_and_nothing_else(tmp_path: Path) -> None:
    small = {"days": 1, "users": 600}
    run_sim(tmp_path / "a", **small)
    run_sim(tmp_path / "b", **small, content_topic_weight=0.3, category_topic_share=0.5, content_dim=8)
    a, b = digest(tmp_path / "a" / "sim"), digest(tmp_path / "b" / "sim")
    changed = {path for path in a if a[path] != b[path]}
    assert a.keys() == b.keys() and changed and all(path.startswith("raw/items/") for path in changed)
