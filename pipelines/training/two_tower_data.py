"""What the two-tower model learns from and how its recall is measured: clicked (user, item) pairs of a window with
point-in-time histories, the encoder of ids, profiles and content, and recall@k against popularity and item-CF.

Reads only what the platform logs (the clean ``items``, ``users`` and ``impressions`` tables); never ``truth``.

* Positives: every click of the window's training days (the last day of the window is held out).
* History: the user's last ``history_len`` clicked items strictly before the impression's time, newest first
  (a click at the same instant, e.g. in the same feed request, is not history). It is read from the window's
  clicks: the first day's rows have short histories, as a user's first visit does.
* Ids: users and items with fewer clicks than their minimum count in the training days share row 0 (MODELS.md
  §6), as do all ids unseen in training. Content (category, keywords, content vector) goes through the content
  tower's :class:`~pipelines.training.content_data.ContentEncoder`; with a content tower, its vector is appended.
* Recall@k on the held-out day, per user who clicked there: the user's query is the profile and the clicks
  before the day; items the user clicked in training are filtered out (serving's seen filter) of the ranking
  and of the relevant set. Slices, each ranked within its own pool (as serving's age pools are): ``all`` (every
  item published by the day's end), ``warm`` (items with training impressions) and ``new`` (published on the
  held-out day or without a training impression).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from pipelines.data.contract import Store
from pipelines.training.content_data import CONTENT_COLUMNS, ContentEncoder

PROFILE_FIELDS = ["gender", "age", "occupation", "region", "device"]
SLICES = ("all", "warm", "new")
Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (task user rows, pool item ids) -> [n, m] scores


class TwoTowerDataConfig(BaseModel):
    """How pairs, histories and vocabularies are built from the window. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    history_len: int = Field(20, ge=1, description="Recent clicks in the user tower (the rankers' seq_len).")
    min_clicks_user: int = Field(
        2, ge=1, description="Training clicks a user needs for an own row (fewer: row 0, which new users get)."
    )
    min_clicks_item: int = Field(
        5, ge=1, description="Training clicks an item needs for an own row: a row learns from its positives, and "
        "under 5 clicks it is noise; the tail and the new items then train row 0 with their content.",
    )  # fmt: skip
    min_keyword_items: int = Field(2, ge=1, description="As the content tower's: a rarer keyword is unseen.")
    max_keywords: int = Field(8, ge=1)
    content_tower: bool = Field(
        True, description="Append the champion content tower's vector to the item input when one exists (it is "
        "bundled with the model so a new item embeds the same way); the raw vector is always read.",
    )  # fmt: skip


@dataclass
class WindowLog:
    """The catalog up to the window's end, every user's profile, and the window's impressions (time-ordered)."""

    items: pd.DataFrame
    users: pd.DataFrame
    impressions: pd.DataFrame


def read_log(data: Store, start: dt.date, end: dt.date, layer: str = "clean") -> WindowLog:
    """Items published up to ``end``, users signed up up to ``end``, impressions of [start, end]."""
    items = data.read_range("items", None, end, layer, columns=[*CONTENT_COLUMNS, "publish_time"]).to_pandas()
    users = data.read_range("users", None, end, layer, columns=["user_id", *PROFILE_FIELDS]).to_pandas()
    columns = ["user_id", "item_id", "click", "event_time"]
    impressions = data.read_range("impressions", start, end, layer, columns=columns).to_pandas()
    return WindowLog(items.drop_duplicates("item_id", keep="last").reset_index(drop=True),
                     users.drop_duplicates("user_id", keep="last").reset_index(drop=True),
                     impressions.sort_values("event_time", kind="stable").reset_index(drop=True))  # fmt: skip


def clicks_of(impressions: pd.DataFrame) -> pd.DataFrame:
    return impressions.loc[impressions["click"] > 0, ["user_id", "item_id", "event_time"]].reset_index(drop=True)


def histories_before(clicks: pd.DataFrame, user_ids: np.ndarray, times: Any, n: int) -> list[np.ndarray]:
    """Each query's last ``n`` clicked item ids strictly before its time, newest first (point-in-time).

    Args:
        clicks: ``user_id``, ``item_id``, ``event_time``.
        user_ids: [Q] the queries' users.
        times: [Q] timestamps, or one timestamp for every query.
    """
    ordered = clicks.sort_values(["user_id", "event_time"], kind="stable")
    per_user = {u: (g["event_time"].to_numpy(), g["item_id"].to_numpy(np.int64))
                for u, g in ordered.groupby("user_id", sort=False)}  # fmt: skip
    stamps = pd.to_datetime(pd.Series(times if np.ndim(times) else [times] * len(user_ids))).to_numpy()
    empty = np.zeros(0, np.int64)
    out = []
    for user, t in zip(user_ids, stamps, strict=True):
        seen = per_user.get(user)
        if seen is None:
            out.append(empty)
            continue
        k = int(np.searchsorted(seen[0], t, side="left"))  # clicks at t or later are not history
        out.append(seen[1][max(0, k - n) : k][::-1])
    return out


def _vocab(values: pd.Series, least: int = 1) -> dict[str, int]:
    counts = values.dropna().map(_key).value_counts()
    return {v: i + 1 for i, v in enumerate(sorted(counts.index[counts >= least]))}


def _key(value: Any) -> str:
    """Vocabulary key: 3, 3.0 and "3" are the same value (a reindexed int column with a gap turns float)."""
    value = value.item() if isinstance(value, np.generic) else value
    return str(int(value) if isinstance(value, float) and value.is_integer() else value)


def _index(vocab: dict[str, int], values: Any) -> np.ndarray:
    codes, uniques = pd.factorize(pd.Series(values), use_na_sentinel=True)
    mapped = np.array([vocab.get(_key(v), 0) for v in uniques] + [0], dtype=np.int64)  # missing (-1) -> 0
    return mapped[codes]


@dataclass
class TwoTowerEncoder:
    """Id and profile vocabularies (1-based; 0 = unknown) and the content encoder, fitted on training days.

    ``tower`` (a :class:`~pipelines.serving.content_vectors.TowerEmbedder`) is not serialised: the model's
    pyfunc bundles the tower's own weights and sets it on load.
    """

    users: dict[str, int]
    items: dict[str, int]
    profile: dict[str, dict[str, int]]
    content: ContentEncoder
    history_len: int
    tower_dim: int = 0
    tower: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def fit(cls, clicks: pd.DataFrame, log: WindowLog, cfg: TwoTowerDataConfig, tower: Any = None) -> TwoTowerEncoder:
        """Fit on the training days' ``clicks`` and the catalog and users of ``log``."""
        tower_dim = int(tower.embed(log.items.head(1))[0].shape[1]) if tower is not None else 0
        return cls(users=_vocab(clicks["user_id"], cfg.min_clicks_user),
                   items=_vocab(clicks["item_id"], cfg.min_clicks_item),
                   profile={f: _vocab(log.users[f]) for f in PROFILE_FIELDS},
                   content=ContentEncoder.fit(log.items, cfg.min_keyword_items, cfg.max_keywords),
                   history_len=cfg.history_len, tower_dim=tower_dim, tower=tower)  # fmt: skip

    def spec(self) -> Any:
        from pipelines.models.two_tower import TwoTowerSpec

        c = self.content.spec()
        return TwoTowerSpec(len(self.users), len(self.items), tuple(len(self.profile[f]) for f in PROFILE_FIELDS),
                            c.n_categories, c.n_keywords, c.max_keywords, c.content_dim + self.tower_dim)  # fmt: skip

    def user_tensors(self, users: pd.DataFrame, histories: list[Any]) -> dict[str, torch.Tensor]:
        """Rows of ``user_id`` and profile fields (missing: unknown) and their item-id histories, newest first."""
        profile = np.stack([_index(self.profile[f], users[f]) if f in users else np.zeros(len(users), np.int64)
                            for f in PROFILE_FIELDS], axis=1)  # fmt: skip
        cut = [np.asarray(list(ids)[: self.history_len], dtype=np.int64) for ids in histories]
        lengths = np.array([len(ids) for ids in cut], dtype=np.int64)
        flat = np.concatenate([np.zeros(0, np.int64), *cut])
        slot = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        history = np.zeros((len(users), self.history_len), np.int64)
        history[np.repeat(np.arange(len(users)), lengths), slot] = _index(self.items, flat)  # one lookup for all
        return {"user": torch.from_numpy(_index(self.users, users["user_id"])),
                "profile": torch.from_numpy(profile), "history": torch.from_numpy(history)}  # fmt: skip

    def item_tensors(self, items: pd.DataFrame) -> dict[str, torch.Tensor]:
        """Rows of ``item_id`` and content -> ``item``, ``tokens``, ``content`` (+ tower vector), ``item_id``."""
        x = self.content.transform(items)
        content = x["content"]
        if self.tower_dim:
            if self.tower is None:
                raise ValueError("this encoder reads the content tower's vector: load it through the model's pyfunc")
            content = torch.cat([content, torch.from_numpy(self.tower.embed(items)[0])], dim=1)
        ids = items["item_id"].to_numpy(np.int64)
        return {"item": torch.from_numpy(_index(self.items, ids)), "tokens": x["tokens"], "content": content,
                "item_id": torch.from_numpy(ids.copy())}  # fmt: skip

    def to_dict(self) -> dict:
        return {"users": self.users, "items": self.items, "profile": self.profile, "content": self.content.to_dict(),
                "history_len": self.history_len, "tower_dim": self.tower_dim}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict, tower: Any = None) -> TwoTowerEncoder:
        return cls(**{**data, "content": ContentEncoder.from_dict(data["content"])}, tower=tower)


def pair_tensors(encoder: TwoTowerEncoder, clicks: pd.DataFrame, history_from: pd.DataFrame, log: WindowLog,
                 log_q: pd.Series) -> dict[str, torch.Tensor]:  # fmt: skip
    """The trainer's rows for clicked pairs: user inputs at the click's time, item inputs, ``log_q``.

    Args:
        clicks: the positives (``user_id``, ``item_id``, ``event_time``).
        history_from: the clicks histories are read from (the window's, up to the pairs' day).
        log_q: log click share by item id (``counts`` correction); an item without clicks gets the smallest.
    """
    histories = histories_before(history_from, clicks["user_id"].to_numpy(), clicks["event_time"].to_numpy(),
                                 encoder.history_len)  # fmt: skip
    users = log.users.set_index("user_id").reindex(clicks["user_id"].to_numpy()).reset_index()
    out = encoder.user_tensors(users, histories)
    catalog = encoder.item_tensors(log.items)
    rows = torch.from_numpy(pd.Index(log.items["item_id"]).get_indexer(clicks["item_id"].to_numpy()))
    if (rows < 0).any():
        raise ValueError("clicked items missing from the catalog")
    out |= {k: v[rows] for k, v in catalog.items()}
    q = log_q.reindex(clicks["item_id"].to_numpy()).fillna(log_q.min() if len(log_q) else 0.0)
    return out | {"log_q": torch.from_numpy(q.to_numpy(np.float32))}


def click_log_q(clicks: pd.DataFrame) -> pd.Series:
    """log of each item's share of the clicks (the ``counts`` correction's p_j)."""
    counts = clicks.groupby("item_id").size()
    return np.log(counts / counts.sum())


@dataclass
class RecallTask:
    """The held-out day as a recall test: query users, their pre-day histories and seen items, the relevant
    items per slice, and each slice's pool."""

    users: pd.DataFrame
    histories: list[np.ndarray]
    seen: list[np.ndarray]
    relevant: dict[str, list[np.ndarray]]
    pools: dict[str, np.ndarray]
    train_clicks: pd.DataFrame


def recall_task(log: WindowLog, day: dt.date, history_len: int) -> RecallTask:
    """The recall test of held-out ``day`` (the last day of ``log``): only the days before it feed the queries."""
    start = pd.Timestamp(day, tz="UTC")
    before = log.impressions[log.impressions["event_time"] < start]
    train_clicks, held = clicks_of(before), clicks_of(log.impressions[log.impressions["event_time"] >= start])
    items = log.items[log.items["publish_time"] < start + pd.Timedelta(days=1)]
    new = (items["publish_time"] >= start) | ~items["item_id"].isin(before["item_id"])
    pools = {"all": items["item_id"].to_numpy(np.int64), "warm": items.loc[~new, "item_id"].to_numpy(np.int64),
             "new": items.loc[new, "item_id"].to_numpy(np.int64)}  # fmt: skip
    seen_by, held_by = (_items_by_user(c) for c in (train_clicks, held))
    user_ids = np.array(sorted(held_by), dtype=np.int64)
    empty = np.zeros(0, np.int64)
    seen = [seen_by.get(u, empty) for u in user_ids]
    relevant = {name: [np.intersect1d(np.setdiff1d(held_by[u], s), pool) for u, s in zip(user_ids, seen, strict=True)]
                for name, pool in pools.items()}  # fmt: skip
    users = log.users.set_index("user_id").reindex(user_ids).reset_index()
    return RecallTask(users, histories_before(train_clicks, user_ids, start, history_len), seen, relevant, pools,
                      train_clicks)  # fmt: skip


def _items_by_user(clicks: pd.DataFrame) -> dict[int, np.ndarray]:
    return {int(u): np.unique(g.to_numpy(np.int64)) for u, g in clicks.groupby("user_id")["item_id"]}


def recall_at_k(scores: np.ndarray, pool: np.ndarray, relevant: list[np.ndarray], seen: list[np.ndarray],
                k: int) -> np.ndarray:  # fmt: skip
    """Per user: |top-k of the pool by score, seen items removed ∩ relevant| / |relevant| ([n] float)."""
    out = np.zeros(len(relevant))
    k = min(k, len(pool))
    for row, (rel, gone) in enumerate(zip(relevant, seen, strict=True)):
        s = scores[row].copy()
        s[np.isin(pool, gone)] = -np.inf
        top = pool[np.argpartition(-s, k - 1)[:k]] if k else pool[:0]
        out[row] = np.isin(rel, top).sum() / len(rel)
    return out


def evaluate_recall(task: RecallTask, scorers: dict[str, Scorer], k: int) -> dict[str, dict[str, Any]]:
    """recall@k of each scorer on each slice: ``{slice: {"users": n, name: mean, name + "_per_user": array}}``."""
    result: dict[str, dict[str, Any]] = {}
    for name in SLICES:
        rows = np.array([i for i, rel in enumerate(task.relevant[name]) if len(rel)], dtype=np.int64)
        pool = task.pools[name]
        result[name] = {"users": len(rows)}
        if not len(rows) or not len(pool):
            continue
        for label, scorer in scorers.items():
            per_user = recall_at_k(scorer(rows, pool), pool, [task.relevant[name][i] for i in rows],
                                   [task.seen[i] for i in rows], k)  # fmt: skip
            result[name][label], result[name][f"{label}_per_user"] = float(per_user.mean()), per_user
    return result


def popularity_scorer(task: RecallTask, seed: int = 0) -> Scorer:
    """Training-day click counts, the same for every user; ties (all new items) in a seeded random order."""
    counts = task.train_clicks.groupby("item_id").size()
    rng = np.random.default_rng(seed)

    def score(rows: np.ndarray, pool: np.ndarray) -> np.ndarray:
        base = counts.reindex(pool).fillna(0).to_numpy(np.float64) + rng.random(len(pool)) * 0.5
        return np.broadcast_to(base, (len(rows), len(pool)))

    return score


def item_cf_scorer(task: RecallTask, seed: int = 0) -> Scorer:
    """Item-CF: sim(i, j) = |N(i) ∩ N(j)| / sqrt(|N(i)|·|N(j)|) over training clicks (N: the users who clicked),
    a user's score of j = Σ over the items i the user clicked in training of sim(i, j); popularity breaks ties."""
    from scipy import sparse

    clicks = task.train_clicks[["user_id", "item_id"]].drop_duplicates()
    item_codes, item_ids = pd.factorize(clicks["item_id"])
    user_codes, user_ids = pd.factorize(clicks["user_id"])
    x = sparse.csr_matrix((np.ones(len(clicks)), (user_codes, item_codes)), shape=(len(user_ids), len(item_ids)))
    size = np.asarray(x.sum(axis=0)).ravel()
    norm = sparse.diags(1 / np.sqrt(size))
    sim = (norm @ (x.T @ x) @ norm).tocsr()  # [items, items]
    sim.setdiag(0)
    user_row = pd.Index(user_ids).get_indexer(task.users["user_id"])
    popularity = popularity_scorer(task, seed)

    def score(rows: np.ndarray, pool: np.ndarray) -> np.ndarray:
        cols = pd.Index(item_ids).get_indexer(pool)
        known = user_row[rows]
        out = np.zeros((len(rows), len(pool)))
        has = known >= 0
        if has.any() and (cols >= 0).any():
            block = (x[known[has]] @ sim[:, cols[cols >= 0]]).toarray()  # [users with clicks, pool items known]
            out[np.ix_(np.flatnonzero(has), np.flatnonzero(cols >= 0))] = block
        tie = popularity(rows, pool)
        return out + 1e-6 * tie / max(float(tie.max()), 1.0)

    return score
