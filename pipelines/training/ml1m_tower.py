"""The content tower (MODELS.md §7) on MovieLens-1M, as an item input of MeLU for its new-item scenario.

The same tower and trainer as the simulator's (``pipelines.training.content_tower.fit_tower``,
``embed_items``); only the data differ:

* content: :func:`pipelines.data.movielens.tower_content` (genres, title tokens, release decade and year);
* engagement: a rating of at least ``min_rating`` is a click; every rating is an impression at one position, so
  the tower's observed quality becomes the item's smoothed share of good ratings against the average share;
* what it learns from: the warm scenario of MeLU's split only (existing users × existing items, MeLU's own
  meta-training ratings). New items' ratings and every evaluation user's ratings stay out, and new items get
  their vectors from content alone, as a film would on its release day.

:class:`ItemTower` carries the trained tower and its content encoder: MeLU's encoder embeds any item from its
content columns (``content_vector``, ``title``, ``release_year``), so training, evaluation, the pyfunc and the
melu bento score through the same call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from pipelines.data.movielens import tower_content
from pipelines.models.content_tower import ContentSpec, ContentTower, ContentTowerConfig
from pipelines.training.config import TrainConfig
from pipelines.training.content_data import TripletConfig
from pipelines.training.content_tower import ContentTowerTraining, embed_items, fit_tower

log = logging.getLogger(__name__)

TRAINING_SCENARIO = "warm"  # the only scenario whose ratings the tower may see
VECTOR_COLUMN = "tower_vector"


def _default_tower() -> ContentTowerTraining:
    # MeLU's warm side holds ~89k ratings of ~3k items: fewer anchors than the simulator's windows, so fewer
    # triplets and epochs keep a fit to seconds (MeLU trains the tower once per run, the benchmark once a seed).
    # Keyword slots: the decade, up to 6 genres and the title words (up to 12 in all on ML-1M).
    return ContentTowerTraining(
        model=ContentTowerConfig(dim=16),
        triplets=TripletConfig(
            min_clicks=5, min_co_users=3, positives_per_item=5, max_triplets=30_000, max_keywords=16
        ),  # fmt: skip
        train=TrainConfig(epochs=20, batch_size=256, lr=3e-3, patience=3, threads=1),
    )


class MovieLensTowerConfig(BaseModel):
    """The content tower for MeLU on MovieLens-1M. Unknown keys are rejected.

    ``min_rating`` 4: ML-1M's mean rating is 3.6, so 4 and 5 are the ratings above it, "liked" rather than
    "watched"; co-liking is the engagement the triplets' positives are built from (item-CF cosine, as on the
    simulator). The tower's sizes are smaller than the simulator's: 16 dimensions for ~3k items.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_rating: float = Field(4.0, ge=1, le=5, description="A rating at least this counts as a click.")
    tower: ContentTowerTraining = Field(default_factory=_default_tower)


def training_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The split rows the tower may learn from: the warm scenario (support and query sets), nothing else."""
    return rows[rows["scenario"] == TRAINING_SCENARIO]


def engagement(rows: pd.DataFrame, min_rating: float) -> pd.DataFrame:
    """Ratings as the tower's impressions: ``user_id``, ``item_id``, ``click`` (rating >= ``min_rating``),
    ``position`` (0: ratings have no feed position)."""
    return pd.DataFrame(
        {
            "user_id": rows["user_id"].to_numpy(np.int64),
            "item_id": rows["item_id"].to_numpy(np.int64),
            "click": (rows["rating"].to_numpy() >= min_rating).astype(np.int64),
            "position": np.zeros(len(rows), dtype=np.int64),
        }
    )


def catalog(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per item of ``rows`` with its tower content (:func:`tower_content`)."""
    items = rows.drop_duplicates("item_id").sort_values("item_id", kind="stable")
    return tower_content(items).reset_index(drop=True)


@dataclass
class ItemTower:
    """A trained content tower and its content encoder: MeLU's item vectors from content alone."""

    model: ContentTower
    encoder: object  # pipelines.training.content_data.ContentEncoder
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return self.model.cfg.dim

    def embed(self, rows: pd.DataFrame) -> np.ndarray:
        """[n, dim] unit vectors of ``rows``' items: the ``tower_vector`` column when :meth:`attach` set it (the
        same vectors, computed once per item), else from the rows' content."""
        if VECTOR_COLUMN in rows:
            return np.stack([np.asarray(v, dtype=np.float32) for v in rows[VECTOR_COLUMN]]).reshape(len(rows), -1)
        if rows.empty:
            return np.zeros((0, self.dim), np.float32)
        vectors = embed_items(self.model, self.encoder, tower_content(rows))["vector"]
        return np.stack(vectors).astype(np.float32)

    def attach(self, rows: pd.DataFrame) -> pd.DataFrame:
        """``rows`` with a ``tower_vector`` column, each distinct item embedded once from its content."""
        items = rows.drop_duplicates("item_id")
        vectors = pd.Series(list(self.embed(items)), index=items["item_id"].to_numpy())
        return rows.assign(**{VECTOR_COLUMN: vectors.reindex(rows["item_id"].to_numpy()).to_numpy()})

    def meta(self) -> dict:
        """What :meth:`load` needs beside the weights (JSON-able)."""
        return {"encoder": self.encoder.to_dict(), "spec": self.encoder.spec().__dict__,
                "config": self.model.cfg.model_dump(), "metrics": self.metrics}  # fmt: skip

    def save(self, folder: Path) -> tuple[dict, Path]:
        """Write the weights into ``folder``; returns (meta, weights path)."""
        path = Path(folder) / "tower.pt"
        torch.save(self.model.state_dict(), path)
        return self.meta(), path

    @classmethod
    def load(cls, meta: dict, weights: str | Path) -> ItemTower:
        from pipelines.training.content_data import ContentEncoder

        model = ContentTower(ContentSpec(**meta["spec"]), ContentTowerConfig(**meta["config"]))
        model.load_state_dict(torch.load(weights, weights_only=True))
        model.eval()
        return cls(model, ContentEncoder.from_dict(meta["encoder"]), meta.get("metrics", {}))


def fit_ml1m_tower(rows: pd.DataFrame, cfg: MovieLensTowerConfig, seed: int) -> ItemTower:
    """Train the content tower on the warm scenario of MeLU's split (see the module docstring).

    Args:
        rows: MeLU's rows (:func:`pipelines.data.movielens.load_rows` or ``join_rows``), every scenario; only
            the warm ones are read.
        cfg: the tower's config; ``seed`` replaces its trainer seed.
        seed: seeds the triplets, the initialization and the batches.
    """
    warm = training_rows(rows)
    training = cfg.tower.model_copy(update={"train": cfg.tower.train.model_copy(update={"seed": seed})})
    fitted = fit_tower(catalog(warm), engagement(warm, cfg.min_rating), training)
    best = fitted.history[fitted.counts["best_epoch"] - 1] if fitted.counts["best_epoch"] else {}
    metrics = {k: float(v) for k, v in {**fitted.counts, **best}.items()}
    log.info("ML-1M content tower: %s", {k: round(v, 4) for k, v in metrics.items()})
    return ItemTower(fitted.model, fitted.encoder, metrics)
