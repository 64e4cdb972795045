"""What a training run can be told: the trainer's knobs and a training request. Pydantic only (no torch): the
DAGs and the CLI take their defaults from here at parse time."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """The generic trainer's knobs (also MeLU's epochs and seed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(3, ge=1)
    batch_size: int = Field(1024, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 7
    patience: int = Field(2, ge=1, description="Epochs without validation improvement before stopping.")
    threads: int = Field(2, ge=1, description="torch intra-op threads (both cores of the machine).")
    fused_adam: bool = Field(True, description="Adam's fused multi-tensor kernel (also on CPU).")
    progress: bool = False
    # Learned default embeddings (MODELS.md §6): row 0 of the user, item and author tables scores every unseen id
    # (serving, the new-item and new-user slices, the content-kNN fallback), so it must be trained. Ids rarer
    # than these counts in the training frame fold into it (the long tail teaches it the cold case), and id
    # dropout trains it on a share of every batch. Defaults measured on the simulator (6 training days, 12k
    # users): the new-item slice's mean pCTR / true CTR went from 2.14 (row 0 untrained) to 1.05, warm AUC kept.
    min_count_user: int = Field(
        20, ge=1, description="Training impressions a user needs for an own embedding (fewer: row 0). 20 is two "
        "feed requests: the users who fold signed up late in the window or barely came, as new users do."
    )  # fmt: skip
    min_count_item: int = Field(
        50, ge=1, description="Training impressions an item needs for an own embedding (fewer: row 0). At a new "
        "or tail item's CTR (~3%) 50 impressions hold ~1.5 clicks: too few to learn a row, what row 0 should "
        "learn from. 20 folded too little (0.6% of rows) to outweigh the id dropout's warm rows; 100 folded 26%."
    )  # fmt: skip
    min_count_author: int = Field(
        50, ge=1, description="Training impressions an author needs for an own embedding (fewer: row 0); as items."
    )
    id_dropout: float = Field(
        0.02, ge=0, lt=1, description="Share of training rows whose user, item and author ids (each independently) "
        "are looked up as row 0; training only, seeded by (seed, epoch). It trains row 0 even when nothing "
        "folds; each dropped row is a warm one, so more pulls new items toward the warm CTR (0.05: pCTR/CTR 1.25)."
    )  # fmt: skip

    @property
    def min_counts(self) -> dict[str, int]:
        """The minimum counts by encoder column (what :meth:`FeatureEncoder.fit` takes)."""
        return {"user_id": self.min_count_user, "item_id": self.min_count_item, "author_id": self.min_count_author}


class TrainRequest(BaseModel):
    """One model to train, as a DAG run or the CLI asks for it; each family's train hook reads what it needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field("sim", pattern="^[a-z0-9_]+$")
    start: dt.date | None = Field(None, description="First day of the window (None: `window_days` back from end).")
    end: dt.date | None = Field(None, description="Last day of the window (its validation day).")
    window_days: int = Field(7, ge=2, description="Clean days in the window when no start is given.")
    train: TrainConfig = Field(default_factory=TrainConfig)
    poso: bool = Field(False, description="POSO gates on every model that supports them.")
    uie: bool = Field(True, description="The UIE enhancement on the models that have it on by default.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Model config overrides (unknown keys fail).")
    reuse: bool = Field(True, description="Make an identical earlier version `candidate` instead of retraining.")


def trainer_overrides(**knobs: Any) -> dict[str, Any]:
    """The trainer knobs a trigger form or CLI actually set (None: not set), for ``TrainRequest.train``.

    Only what is set reaches the request, so each family's own trainer defaults (the content tower trains more,
    smaller steps than the rankers) hold unless the caller asks otherwise: the families read
    ``request.train.model_dump(exclude_unset=True)`` on top of their defaults.
    """
    return {name: value for name, value in knobs.items() if value is not None}


def request_train(defaults: TrainConfig, request: TrainRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    """A self-gating model's trainer knobs and the rest of its overrides: its own ``defaults``, then the request's
    explicitly set trainer knobs, then ``overrides["train"]``. Returns (train fields, the other overrides)."""
    overrides = dict(request.overrides)
    train = defaults.model_dump() | request.train.model_dump(exclude_unset=True)
    return train | overrides.pop("train", {}), overrides
