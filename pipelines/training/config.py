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
