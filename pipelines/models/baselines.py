"""Baselines: single-task DNNs trained apart (the ESMM paper's BASE) and shared-bottom multi-task.

``BaseCTRCVR`` holds two independent DNNs: the CTR one learns from every impression, the CVR one from clicked
impressions only (the biased sample space ESMM fixes); pCTCVR is their product.
"""

from __future__ import annotations

from pipelines.models.base import (
    InputEncoder,
    InputSpec,
    ModelConfig,
    RankingModel,
    clicked_cvr_loss,
    ctr_cvr_outputs,
    ctr_loss,
)
from pipelines.models.layers import MLP, Tower


def ctr_and_clicked_cvr_loss(batch, out):
    """CTR on every impression, CVR on clicked impressions only (the baselines' biased sample space)."""
    l_ctr = ctr_loss(out, batch["click"])
    l_cvr = clicked_cvr_loss(out, batch["click"], batch["conversion"])
    return l_ctr + l_cvr, {"loss_ctr": l_ctr.detach(), "loss_cvr": l_cvr.detach()}


class BaseConfig(ModelConfig):
    pass


class BaseCTRCVR(RankingModel):
    """Two separate DNNs (no shared parameters)."""

    config_class = BaseConfig

    def __init__(self, spec: InputSpec, cfg: BaseConfig) -> None:
        super().__init__()
        self.cfg = cfg
        gate_dim = spec.pc_dim if cfg.poso else 0
        self.ctr_encoder = InputEncoder(spec, cfg.embed_dim)
        self.cvr_encoder = InputEncoder(spec, cfg.embed_dim)
        self.ctr_tower = Tower(self.ctr_encoder.output_dim, cfg.tower, cfg.dropout, gate_dim)
        self.cvr_tower = Tower(self.cvr_encoder.output_dim, cfg.tower, cfg.dropout, gate_dim)

    def forward(self, batch):
        pc = batch.get("pc")
        return ctr_cvr_outputs(self.ctr_tower(self.ctr_encoder(batch), pc), self.cvr_tower(self.cvr_encoder(batch), pc))

    def loss(self, batch, out):
        return ctr_and_clicked_cvr_loss(batch, out)


class SharedBottomConfig(ModelConfig):
    bottom: list[int] = [128, 64]


class SharedBottom(RankingModel):
    """A shared bottom MLP, then one tower per task (CTR on all rows, CVR on clicked rows)."""

    config_class = SharedBottomConfig

    def __init__(self, spec: InputSpec, cfg: SharedBottomConfig) -> None:
        super().__init__()
        self.cfg = cfg
        gate_dim = spec.pc_dim if cfg.poso else 0
        self.encoder = InputEncoder(spec, cfg.embed_dim)
        self.bottom = MLP(self.encoder.output_dim, cfg.bottom, cfg.dropout, gate_dim)
        self.ctr_tower = Tower(self.bottom.output_dim, cfg.tower, cfg.dropout)
        self.cvr_tower = Tower(self.bottom.output_dim, cfg.tower, cfg.dropout)

    def forward(self, batch):
        h = self.bottom(self.encoder(batch), batch.get("pc"))  # [B, bottom[-1]]
        return ctr_cvr_outputs(self.ctr_tower(h), self.cvr_tower(h))

    def loss(self, batch, out):
        return ctr_and_clicked_cvr_loss(batch, out)
