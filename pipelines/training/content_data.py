"""What the content tower learns from: items' content as tensors, each item's observed quality, co-engagement
positives and sampled negatives, as triplet tensors for the generic trainer.

Reads only what the platform logs (the ``items`` and ``impressions`` tables); never the ``truth`` layer.

Positives [our rule, MODELS.md §7 leaves it open]: items the same users clicked in the training window, ranked by
item-CF cosine |U(i) ∩ U(j)| / sqrt(|U(i)|·|U(j)|) (U(i): the users who clicked i), the top
``positives_per_item`` per anchor among pairs with at least ``min_co_users`` common users. The raw co-click
count favours popular items, which everyone clicks whatever they like; the cosine divides that out (on the
simulator, pairs in the top fifth by cosine share a hidden topic ~10x as often as random pairs, the bottom fifth
less often than random). ``category`` (random items of the anchor's category) is the fallback rule for a
platform without engagement; it only teaches the tower what the category already says.

Observed quality: clicks over expected clicks (COEC: each impression expects the window's click rate at its
position), smoothed towards 1 with ``quality_prior`` pseudo expected clicks, on a log scale; its weight
expected / (expected + prior) says how much evidence the item has. COEC, not raw CTR, because the feed puts
popular items at the top positions, where anything gets clicked more.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from pipelines.data.contract import Store
from pipelines.models.content_tower import ContentSpec

CONTENT_COLUMNS = ["item_id", "category", "keywords", "content_vector"]


class TripletConfig(BaseModel):
    """How training triplets are built from the event log. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    positive_rule: Literal["co_engagement", "category"] = "co_engagement"
    min_clicks: int = Field(3, ge=1, description="Users who clicked an item for it to be an anchor or a positive.")
    min_co_users: int = Field(2, ge=1, description="Users who clicked both items of a positive pair.")
    positives_per_item: int = Field(5, ge=1, description="Positives kept per anchor (highest cosine first).")
    negatives: int = Field(4, ge=1, description="Random negatives per triplet, uniform over the catalog.")
    max_triplets: int = Field(100_000, ge=1)
    val_share: float = Field(0.1, gt=0, lt=1, description="Share of anchor items whose triplets validate.")
    quality_prior: float = Field(5.0, gt=0, description="Pseudo expected clicks the observed quality starts from.")
    min_keyword_items: int = Field(2, ge=1, description="A keyword in fewer training items maps to unseen (0).")
    max_keywords: int = Field(8, ge=1, description="Keyword slots per item (more are cut).")


@dataclass
class ContentEncoder:
    """Vocabularies (1-based; 0 = unseen) and the content vector's standardisation, fitted on training items."""

    categories: dict[str, int]
    keywords: dict[str, int]
    mean: list[float]
    std: list[float]
    max_keywords: int

    @classmethod
    def fit(cls, items: pd.DataFrame, min_keyword_items: int = 2, max_keywords: int = 8) -> ContentEncoder:
        """Fit on the training catalog (``category``, ``keywords``, ``content_vector`` columns)."""
        counts = pd.Series([k for row in items["keywords"] for k in set(_strings(row))], dtype=object).value_counts()
        kept = sorted(counts.index[counts >= min_keyword_items])
        vectors = _vectors(items["content_vector"])
        present = vectors[~np.isnan(vectors).any(axis=1)]
        return cls(
            categories={c: i + 1 for i, c in enumerate(sorted(items["category"].dropna().astype(str).unique()))},
            keywords={k: i + 1 for i, k in enumerate(kept)},
            mean=present.mean(axis=0).tolist(),
            std=np.maximum(present.std(axis=0), 1e-6).tolist(),
            max_keywords=max_keywords,
        )

    def spec(self) -> ContentSpec:
        return ContentSpec(len(self.categories), len(self.keywords), self.max_keywords, len(self.mean))

    def transform(self, items: pd.DataFrame) -> dict[str, torch.Tensor]:
        """Items -> ``tokens`` [N, 1 + L] int64 and ``content`` [N, C] float32; a missing vector is the mean (0)."""
        category = items["category"].astype(str).map(self.categories).fillna(0).to_numpy(np.int64)
        keywords = np.zeros((len(items), self.max_keywords), dtype=np.int64)
        for row, cell in enumerate(items["keywords"]):
            ids = [self.keywords[k] for k in _strings(cell) if k in self.keywords][: self.max_keywords]
            keywords[row, : len(ids)] = ids
        vectors = _vectors(items["content_vector"], len(self.mean))
        content = np.nan_to_num((vectors - np.asarray(self.mean)) / np.asarray(self.std)).astype(np.float32)
        tokens = np.concatenate([category[:, None], keywords], axis=1)
        return {"tokens": torch.from_numpy(tokens), "content": torch.from_numpy(content)}

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict) -> ContentEncoder:
        return cls(**data)


def _strings(cell) -> list[str]:
    return [] if cell is None else [str(k) for k in cell if k is not None]


def _vectors(column: pd.Series, width: int | None = None) -> np.ndarray:
    """A column of lists / arrays / None -> [N, C] float64 with NaN rows for missing vectors."""
    cells = [None if v is None else np.asarray(v, dtype=np.float64) for v in column]
    width = width or next((len(v) for v in cells if v is not None), 0)
    out = np.full((len(cells), width), np.nan)
    for row, cell in enumerate(cells):
        if cell is not None:
            if len(cell) != width:
                raise ValueError(f"content_vector of row {row} has {len(cell)} values; the tower reads {width}")
            out[row] = cell
    return out


def read_window(data: Store, start: dt.date, end: dt.date, layer: str = "clean") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The catalog published up to ``end`` and the impressions of [start, end] (``user_id, item_id, click,
    position``)."""
    items = data.read_range(
        "items", None, end, layer, columns=[*CONTENT_COLUMNS, "author_id", "publish_time"]
    ).to_pandas()
    items = items.drop_duplicates("item_id", keep="last").reset_index(drop=True)
    columns = ["user_id", "item_id", "click", "position"]
    impressions = data.read_range("impressions", start, end, layer, columns=columns).to_pandas()
    return items, impressions


def observed_quality(impressions: pd.DataFrame, prior: float) -> pd.DataFrame:
    """Per item: ``clicks``, ``expected`` clicks at its positions, ``quality`` = log smoothed COEC, ``weight``."""
    by_position = impressions.groupby("position")["click"].mean()
    expected = impressions["position"].map(by_position).to_numpy(float)
    per_item = (
        impressions.assign(expected=expected)
        .groupby("item_id")
        .agg(clicks=("click", "sum"), expected=("expected", "sum"))
    )
    per_item["quality"] = np.log((per_item["clicks"] + prior) / (per_item["expected"] + prior))
    per_item["weight"] = per_item["expected"] / (per_item["expected"] + prior)
    return per_item


def co_engaged(impressions: pd.DataFrame, cfg: TripletConfig) -> pd.DataFrame:
    """Positive pairs (``anchor``, ``positive``, ``cosine``) by item-CF cosine over the users who clicked both."""
    from scipy import sparse

    clicks = impressions.loc[impressions["click"] > 0, ["user_id", "item_id"]].drop_duplicates()
    users_per_item = clicks.groupby("item_id").size()
    kept = users_per_item.index[users_per_item >= cfg.min_clicks].to_numpy()
    clicks = clicks[clicks["item_id"].isin(kept)]
    user_codes, users = pd.factorize(clicks["user_id"])
    item_codes = pd.Index(kept).get_indexer(clicks["item_id"])
    x = sparse.csr_matrix((np.ones(len(clicks)), (user_codes, item_codes)), shape=(len(users), len(kept)))
    common = sparse.triu((x.T @ x).tocsr(), k=1).tocoo()  # each unordered pair once; no diagonal
    keep = common.data >= cfg.min_co_users
    a, b, n = common.row[keep], common.col[keep], common.data[keep]
    size = users_per_item.loc[kept].to_numpy(float)
    cosine = n / np.sqrt(size[a] * size[b])
    pairs = pd.DataFrame({"anchor": np.concatenate([kept[a], kept[b]]),
                          "positive": np.concatenate([kept[b], kept[a]]),
                          "cosine": np.concatenate([cosine, cosine])})  # fmt: skip
    pairs = pairs.sort_values(["anchor", "cosine", "positive"], ascending=[True, False, True], kind="stable")
    return pairs.groupby("anchor").head(cfg.positives_per_item).reset_index(drop=True)


def same_category(items: pd.DataFrame, cfg: TripletConfig, rng: np.random.Generator) -> pd.DataFrame:
    """Positive pairs of the ``category`` rule: ``positives_per_item`` random other items of the same category."""
    rows = []
    for _, group in items.groupby("category"):
        ids = group["item_id"].to_numpy()
        if len(ids) < 2:
            continue
        picks = rng.integers(0, len(ids) - 1, (len(ids), cfg.positives_per_item))
        picks += picks >= np.arange(len(ids))[:, None]  # skip the anchor itself
        rows.append(pd.DataFrame({"anchor": np.repeat(ids, cfg.positives_per_item), "positive": ids[picks].ravel()}))
    if not rows:
        return pd.DataFrame(columns=["anchor", "positive"])
    return pd.concat(rows, ignore_index=True).drop_duplicates()


def triplet_ids(pairs: pd.DataFrame, catalog: np.ndarray, cfg: TripletConfig, rng: np.random.Generator) -> np.ndarray:
    """[T, 2 + K] item ids: anchor, positive, then ``negatives`` uniform draws from ``catalog`` (a draw equal to
    the anchor or the positive moves to the next catalog item)."""
    if len(pairs) > cfg.max_triplets:
        pairs = pairs.iloc[np.sort(rng.choice(len(pairs), cfg.max_triplets, replace=False))]
    anchor, positive = pairs["anchor"].to_numpy(np.int64), pairs["positive"].to_numpy(np.int64)
    draws = rng.integers(0, len(catalog), (len(pairs), cfg.negatives))
    for _ in range(2):  # twice: the next item can be the other one of the pair
        clash = (catalog[draws] == anchor[:, None]) | (catalog[draws] == positive[:, None])
        draws = np.where(clash, (draws + 1) % len(catalog), draws)
    return np.concatenate([anchor[:, None], positive[:, None], catalog[draws]], axis=1)


def triplet_tensors(ids: np.ndarray, items: pd.DataFrame, encoded: dict, quality: pd.DataFrame) -> dict:
    """The trainer's rows for triplets ``ids`` [T, S]: each slot's inputs, id, quality target and weight.

    Args:
        ids: [T, S] item ids (anchor, positive, negatives).
        items: the catalog, row-aligned with ``encoded``.
        encoded: ``ContentEncoder.transform(items)``.
        quality: :func:`observed_quality` (items without impressions get weight 0).
    """
    rows = torch.from_numpy(pd.Index(items["item_id"]).get_indexer(ids.ravel()).reshape(ids.shape))  # [T, S]
    target = quality.reindex(ids.ravel())
    shape = ids.shape
    return {
        "tokens": encoded["tokens"][rows],  # [T, S, 1 + L]
        "content": encoded["content"][rows],  # [T, S, C]
        "item": torch.from_numpy(ids),  # [T, S]
        "quality": torch.from_numpy(target["quality"].fillna(0.0).to_numpy(np.float32).reshape(shape)),
        "quality_weight": torch.from_numpy(target["weight"].fillna(0.0).to_numpy(np.float32).reshape(shape)),
    }


@dataclass
class TowerData:
    """Training and validation triplets, the encoder fitted on the catalog, and how many of each there are."""

    train: dict[str, torch.Tensor]
    val: dict[str, torch.Tensor]
    encoder: ContentEncoder
    counts: dict[str, int]


def build_tower_data(items: pd.DataFrame, impressions: pd.DataFrame, cfg: TripletConfig, seed: int) -> TowerData:
    """Triplets of the window: positives by ``cfg.positive_rule``, anchors split by item into train / validation.

    Raises:
        ValueError: the window yields no positive pair (too little engagement for ``min_clicks``), or a single
            anchor item.
    """
    rng = np.random.default_rng(seed)
    items = items.reset_index(drop=True)
    pairs = co_engaged(impressions, cfg) if cfg.positive_rule == "co_engagement" else same_category(items, cfg, rng)
    pairs = pairs[pairs["anchor"].isin(items["item_id"]) & pairs["positive"].isin(items["item_id"])]
    if pairs.empty:
        raise ValueError(f"no positive pairs by {cfg.positive_rule!r} (min_clicks={cfg.min_clicks}, "
                         f"min_co_users={cfg.min_co_users}): the window has too little engagement")  # fmt: skip
    encoder = ContentEncoder.fit(items, cfg.min_keyword_items, cfg.max_keywords)
    encoded = encoder.transform(items)
    quality = observed_quality(impressions, cfg.quality_prior)
    ids = triplet_ids(pairs, items["item_id"].to_numpy(np.int64), cfg, rng)
    anchors = np.unique(ids[:, 0])
    if len(anchors) < 2:
        raise ValueError(f"{len(anchors)} anchor item(s): training and validation need at least one each")
    n_val = min(len(anchors) - 1, max(1, int(round(cfg.val_share * len(anchors)))))
    held = set(rng.choice(anchors, n_val, replace=False).tolist())
    is_val = np.isin(ids[:, 0], list(held))
    train, val = (triplet_tensors(ids[mask], items, encoded, quality) for mask in (~is_val, is_val))
    counts = {"items": len(items), "anchors": len(anchors), "pairs": len(pairs), "train_triplets": int((~is_val).sum()),
              "val_triplets": int(is_val.sum()), "items_with_impressions": len(quality)}  # fmt: skip
    return TowerData(train, val, encoder, counts)
