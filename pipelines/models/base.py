"""What every ranking model shares: its config, the input encoder, and the multi-task outputs and losses."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from pipelines.models.layers import EmbeddingLayer, bce_from_logs, log1mexp, log_sigmoid_pair


@dataclass(frozen=True)
class InputSpec:
    """What the data gives a model: field cardinalities and roles (from the training dataset's encoder)."""

    cardinalities: tuple[int, ...]
    n_dense: int
    pc_dim: int
    user_fields: tuple[int, ...] = ()
    item_field: int = 0
    n_users: int = 1
    seq_len: int = 0


class ModelConfig(BaseModel):
    """Sizes shared by the ranking models; each model extends it. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    embed_dim: int = Field(16, ge=1)
    tower: list[int] = Field(default_factory=lambda: [64, 32])
    dropout: float = Field(0.0, ge=0, lt=1)
    poso: bool = Field(False, description="POSO gates from the personalization code (raw scalars).")
    poso_hidden: int = Field(32, ge=1)


class InputEncoder(nn.Module):
    """x = [embeddings of the sparse fields ; dense features]  -> [B, F*d + D]."""

    def __init__(self, spec: InputSpec, embed_dim: int) -> None:
        super().__init__()
        self.embedding = EmbeddingLayer(list(spec.cardinalities), embed_dim)
        self.output_dim = self.embedding.output_dim + spec.n_dense

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([self.embedding(batch["sparse"]), batch["dense"]], dim=1)


def ctr_cvr_outputs(ctr_logit: torch.Tensor, cvr_logit: torch.Tensor) -> dict[str, torch.Tensor]:
    """pCTR, pCVR and pCTCVR = pCTR·pCVR (exactly), with their logs for stable losses."""
    log_ctr, log_1m_ctr = log_sigmoid_pair(ctr_logit)
    log_cvr, _ = log_sigmoid_pair(cvr_logit)
    log_ctcvr = log_ctr + log_cvr
    p_ctr, p_cvr = torch.sigmoid(ctr_logit), torch.sigmoid(cvr_logit)
    return {
        "ctr_logit": ctr_logit,
        "cvr_logit": cvr_logit,
        "p_ctr": p_ctr,
        "p_cvr": p_cvr,
        "p_ctcvr": p_ctr * p_cvr,
        "log_ctr": log_ctr,
        "log_1m_ctr": log_1m_ctr,
        "log_ctcvr": log_ctcvr,
    }


def ctr_loss(out: dict, click: torch.Tensor) -> torch.Tensor:
    return bce_from_logs(out["log_ctr"], out["log_1m_ctr"], click)


def ctcvr_loss(out: dict, click: torch.Tensor, conversion: torch.Tensor) -> torch.Tensor:
    """BCE of pCTCVR against click∧conversion over every impression (ESMM)."""
    return bce_from_logs(out["log_ctcvr"], log1mexp(out["log_ctcvr"]), click * conversion)


def clicked_cvr_loss(out: dict, click: torch.Tensor, conversion: torch.Tensor) -> torch.Tensor:
    """BCE of pCVR on clicked rows only (the sample space of the CVR task); 0 when no row is clicked."""
    mask = click > 0
    if not mask.any():
        return out["cvr_logit"].sum() * 0.0
    return nn.functional.binary_cross_entropy_with_logits(out["cvr_logit"][mask], conversion[mask])


class RankingModel(nn.Module):
    """Base of the CTR/CVR rankers: subclasses implement ``forward(batch) -> outputs`` and ``loss``."""

    config_class = ModelConfig

    def loss(self, batch: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError
