"""Turn a point-in-time training frame into tensors, with an encoder fitted on training data only.

Choices (recorded in the encoder, which is saved with every model):

* sparse fields map through a vocabulary of the training values; index 0 is the default embedding for every
  value not in it (unseen and brand-new users, items and authors all land there);
* the default embedding is learned (MODELS.md §6): user, item and author ids seen fewer than their minimum count
  (``TrainConfig.min_count_*``) are left out of the vocabulary, so the long tail trains row 0, and
  :func:`drop_ids` (id dropout, training only) looks a share of rows' ids up as row 0; a folded id and an unseen
  one are the same everywhere, serving included;
* dense counts go through log1p, then every dense column is standardized with training mean and std; missing
  values (no snapshot yet: the cold rows) become 0 after standardization, i.e. the training mean, and each
  feature view gets a missing-indicator column;
* POSO's personalization code is raw scalars, not bucketized: log1p(view_count), is_new_user,
  log1p(days_since_signup) (MODELS.md §4 leaves raw vs bucketized open; raw is what the issue asks for);
* the recent-click sequence maps through the item vocabulary, newest first, padded with 0 to ``seq_len``; a
  folded (or unseen) item becomes 0 there too, i.e. it is left out of the history: row 0 says "some rare item",
  which is no evidence of what the user likes, and a separate "rare" index would need a padding row apart from
  row 0 in every sequence model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch

from pipelines.models.base import InputSpec
from pipelines.training.config import TrainConfig

SPARSE = ["user_id", "item_id", "author_id", "gender", "age", "occupation", "region", "device", "category"]
USER_FIELDS = ["user_id", "gender", "age", "occupation", "region", "device"]
COUNTS = [
    "impressions_1d", "impressions_7d", "impressions_30d", "clicks_1d", "clicks_7d", "clicks_30d",
    "conversions_7d", "conversions_30d", "view_count", "exposures_1d", "exposures_7d", "exposures_total",
    "item_clicks_1d", "item_clicks_7d", "item_clicks_total", "items_published", "items_published_30d",
    "age_hours", "days_since_signup", "recent_clicks",
]  # fmt: skip
RATES = ["ctr_smoothed_7d", "cvr_smoothed_7d", "author_ctr_smoothed", "author_cvr_smoothed", "is_new_user", "is_author"]
ID_FIELDS = ["user_id", "item_id", "author_id"]  # the fields with a learned default row (min count, id dropout)
MISSING_FLAGS = {"user_activity": "view_count", "item_stats": "exposures_7d", "author_stats": "items_published"}
LABELS = ["click", "conversion"]


def _floats(column: pd.Series) -> np.ndarray:
    return column.to_numpy(dtype="float64", na_value=np.nan)


def _key(value) -> str:
    """Vocabulary key of a categorical value: 3, 3.0 and "3" are the same id (ids arrive as floats with NaNs)."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        value = int(value)
    return str(value.item() if isinstance(value, np.generic) else value)


def _value_counts(column: pd.Series) -> dict[str, int]:
    """Rows per vocabulary key (3, 3.0 and "3" count together); missing values are not counted."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    counts: dict[str, int] = {}
    for value, n in zip(uniques, np.bincount(codes[codes >= 0], minlength=len(uniques)), strict=True):
        key = _key(value)
        counts[key] = counts.get(key, 0) + int(n)
    return counts


def _arrow_lists(column: pd.Series) -> pa.ListArray | None:
    """The Arrow list array behind an ``ArrowDtype`` list column (what training sets carry), else None."""
    if isinstance(column.dtype, pd.ArrowDtype) and pa.types.is_list(column.dtype.pyarrow_dtype):
        values = column.array._pa_array  # noqa: SLF001  (the public route, to_numpy, makes one object per row)
        return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return None


def _list_lengths(lists: pa.ListArray) -> np.ndarray:
    return pc.fill_null(pc.list_value_length(lists), 0).to_numpy().astype(np.int64)


def list_matrix(column: pd.Series, dim: int, dtype=np.float32) -> np.ndarray:
    """Rows of fixed-length vectors (numpy arrays, lists or an Arrow list column) as an ``(n, dim)`` matrix;
    a missing vector is zeros."""
    lists = _arrow_lists(column)
    if lists is not None:
        lengths = _list_lengths(lists)
        if ((lengths == dim) | (lengths == 0)).all():
            out = np.zeros((len(column), dim), dtype=dtype)
            out[lengths == dim] = lists.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
            return out
    zero = np.zeros(dim, dtype=dtype)
    return np.stack([np.asarray(v, dtype=dtype) if isinstance(v, np.ndarray | list) else zero for v in column])


@dataclass
class FeatureEncoder:
    """Vocabularies and scalers fitted on the training frame."""

    vocab: dict[str, dict[str, int]] = field(default_factory=dict)
    dense: list[str] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    content_dim: int = 0
    seq_len: int = 20
    # Minimum training counts the vocabulary was cut at; empty in encoders saved before there were any (every
    # training id was in the vocabulary then), so those still load.
    min_counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def fit(cls, frame: pd.DataFrame, seq_len: int = 20, min_counts: dict[str, int] | None = None) -> FeatureEncoder:
        """Fit on the training frame.

        Args:
            frame: the training rows (one per impression).
            seq_len: length of the recent-click sequence.
            min_counts: rows a value of a field needs to enter the vocabulary (fewer: index 0), by column;
                None: the defaults of :class:`TrainConfig`; fields not named keep every value.
        """
        min_counts = TrainConfig().min_counts if min_counts is None else min_counts
        enc = cls(seq_len=seq_len, min_counts={c: int(n) for c, n in min_counts.items()})
        for column in SPARSE:
            counts = _value_counts(frame[column]) if column in frame else {}
            least = enc.min_counts.get(column, 1)
            enc.vocab[column] = {v: i + 1 for i, v in enumerate(sorted(v for v, n in counts.items() if n >= least))}
        if "content_vector" in frame:
            vectors = frame["content_vector"].dropna()
            enc.content_dim = len(vectors.iloc[0]) if len(vectors) else 0
        for name, values in enc._dense_raw(frame):
            enc.dense.append(name)
            present = values[~np.isnan(values)]
            mean = float(present.mean()) if len(present) else 0.0
            std = float(present.std(ddof=1)) if len(present) > 1 else 1.0
            enc.mean.append(mean)
            enc.std.append(std if std > 0 else 1.0)
        return enc

    def _dense_raw(self, frame: pd.DataFrame) -> Iterator[tuple[str, np.ndarray]]:
        """(name, float64 values) of every dense column ``frame`` has, in the encoder's order, one at a time
        (an 8M-row training set never holds all of them twice)."""
        # numpy per column (pandas' clip costs ~1 ms a column, which serving pays on every request)
        for c in COUNTS:
            if c in frame:
                yield c, np.log1p(np.clip(_floats(frame[c]), 0, None))
        for c in RATES:
            if c in frame:
                yield c, _floats(frame[c])
        for view, c in MISSING_FLAGS.items():
            if c in frame:
                yield f"missing_{view}", frame[c].isna().to_numpy(dtype="float64")
        if self.content_dim and "content_vector" in frame:
            vectors = list_matrix(frame["content_vector"], self.content_dim)
            for i in range(self.content_dim):
                yield f"content_{i}", vectors[:, i].astype("float64")

    def spec(self) -> InputSpec:
        return InputSpec(
            cardinalities=tuple(len(self.vocab[c]) for c in SPARSE),
            n_dense=len(self.dense),
            pc_dim=3,
            user_fields=tuple(SPARSE.index(c) for c in USER_FIELDS),
            item_field=SPARSE.index("item_id"),
            n_users=len(self.vocab["user_id"]),
            seq_len=self.seq_len,
        )

    def _index(self, column: str, values: pd.Series | np.ndarray) -> np.ndarray:
        """Vocabulary index of each value (0 = unseen or missing); each distinct value is looked up once."""
        vocab = self.vocab[column]
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        mapped = np.array([vocab.get(_key(v), 0) for v in uniques] + [0], dtype=np.int64)  # code -1 (missing) -> 0
        return mapped[codes]

    def _sequence(self, column: pd.Series) -> np.ndarray:
        """The recent-click sequence through the item vocabulary, newest first, 0-padded to ``seq_len``."""
        seq = np.zeros((len(column), self.seq_len), dtype=np.int64)
        lists = _arrow_lists(column)
        if lists is not None:
            lengths = _list_lengths(lists)
            flat = lists.flatten().to_numpy(zero_copy_only=False)
            rows = np.repeat(np.arange(len(column)), lengths)
            slot = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            keep = slot < self.seq_len
            seq[rows[keep], slot[keep]] = self._index("item_id", flat[keep])
            return seq
        items = self.vocab["item_id"]
        seen: dict[int, list[int]] = {}  # a serving request repeats one user's history on every row
        for row, history in enumerate(column):
            if isinstance(history, np.ndarray | list):
                ids = seen.get(id(history))
                if ids is None:
                    ids = seen[id(history)] = [items.get(_key(i), 0) for i in list(history)[: self.seq_len]]
                seq[row, : len(ids)] = ids
        return seq

    def transform(self, frame: pd.DataFrame) -> dict[str, torch.Tensor]:
        """Tensors for the models; columns absent from ``frame`` are treated as missing."""
        n = len(frame)

        def floats(c: str) -> np.ndarray:
            return _floats(frame[c]) if c in frame else np.full(n, np.nan)

        sparse = np.stack([self._index(c, frame[c]) if c in frame else np.zeros(n, np.int64) for c in SPARSE], axis=1)
        dense = np.zeros((n, len(self.dense)), dtype=np.float32)  # absent or missing: 0, the training mean
        slots = {name: i for i, name in enumerate(self.dense)}
        for name, values in self._dense_raw(frame):
            if name in slots:
                i = slots[name]
                dense[:, i] = np.nan_to_num((values - self.mean[i]) / self.std[i], nan=0.0)
        views = np.clip(np.nan_to_num(floats("view_count"), nan=0.0), 0, None)
        is_new = np.nan_to_num(floats("is_new_user"), nan=1.0)  # no profile yet: treat as new
        days = np.clip(np.nan_to_num(floats("days_since_signup"), nan=0.0), 0, None)
        pc = np.stack([np.log1p(views), is_new, np.log1p(days)], 1)
        seq = (
            self._sequence(frame["recent_item_ids"])
            if "recent_item_ids" in frame
            else np.zeros((n, self.seq_len), np.int64)
        )
        user_type = np.where(is_new > 0, 0, np.where(views < 50, 1, 2))
        out = {
            "sparse": torch.from_numpy(sparse),
            "dense": torch.from_numpy(dense),
            "pc": torch.from_numpy(pc.astype(np.float32)),
            "seq": torch.from_numpy(seq),
            "user": torch.from_numpy(sparse[:, SPARSE.index("user_id")].copy()),
            "user_type": torch.from_numpy(user_type.astype(np.int64)),
        }
        for label in LABELS:
            if label in frame:
                out[label] = torch.from_numpy(frame[label].to_numpy(dtype=np.float32))
        if "click" in out and "conversion" in out:
            illegal = (out["click"] == 0) & (out["conversion"] == 1)
            out["conversion"] = torch.where(illegal, torch.zeros_like(out["conversion"]), out["conversion"])
        return out

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__))

    @classmethod
    def load(cls, path: Path) -> FeatureEncoder:
        return cls(**json.loads(Path(path).read_text()))


def batches(data: dict[str, torch.Tensor], batch_size: int, generator: torch.Generator | None = None):
    """Yield shuffled (or, without a generator, ordered) mini-batches of pre-tensorized data."""
    n = len(next(iter(data.values())))
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield {k: v[idx] for k, v in data.items()}


def drop_ids(batch: dict[str, torch.Tensor], p: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Id dropout: each of a row's user, item and author ids is looked up as row 0 with probability ``p``.

    Only the ``sparse`` embedding lookup changes (a copy; ``user``, the UCBE memory index, and the recent-click
    sequence stay): row 0 learns the unknown-id case over the whole training distribution, alongside the
    long-tail rows folded into it. Training only: evaluation and serving never call it.
    """
    if p <= 0 or "sparse" not in batch:
        return batch
    columns = [SPARSE.index(c) for c in ID_FIELDS]
    sparse = batch["sparse"].clone()
    drop = torch.rand(len(sparse), len(columns), generator=generator) < p  # [B, 3], independent per field
    sparse[:, columns] = sparse[:, columns].masked_fill(drop, 0)
    return {**batch, "sparse": sparse}


# The raw feature columns a trained ranker reads (what a serving request must carry).
INPUT_COLUMNS = [*SPARSE, *COUNTS, *RATES, "content_vector", "recent_item_ids"]
