"""ESMM: Entire Space Multi-task Model (Ma et al., SIGIR 2018, arXiv 1804.07931).

Shared embeddings; a CTR tower and a CVR tower over the same input; pCTCVR = pCTR × pCVR. The loss is on CTR
and CTCVR over **all** impressions; pCVR gets gradient only through the product, which removes the
sample-selection bias of training CVR on clicks alone.
"""

from __future__ import annotations

import torch

from pipelines.models.base import (
    InputEncoder,
    InputSpec,
    ModelConfig,
    RankingModel,
    ctcvr_loss,
    ctr_cvr_outputs,
    ctr_loss,
)
from pipelines.models.layers import Tower


class ESMMConfig(ModelConfig):
    ctr_weight: float = 1.0
    ctcvr_weight: float = 1.0


class ESMM(RankingModel):
    config_class = ESMMConfig

    def __init__(self, spec: InputSpec, cfg: ESMMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = InputEncoder(spec, cfg.embed_dim)
        gate_dim = spec.pc_dim if cfg.poso else 0
        self.ctr_tower = Tower(self.encoder.output_dim, cfg.tower, cfg.dropout, gate_dim)
        self.cvr_tower = Tower(self.encoder.output_dim, cfg.tower, cfg.dropout, gate_dim)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.encoder(batch)  # [B, F*d + D], shared by both towers
        pc = batch.get("pc")
        return ctr_cvr_outputs(self.ctr_tower(x, pc), self.cvr_tower(x, pc))

    def loss(self, batch, out):
        click, conversion = batch["click"], batch["conversion"]
        l_ctr, l_ctcvr = ctr_loss(out, click), ctcvr_loss(out, click, conversion)
        total = self.cfg.ctr_weight * l_ctr + self.cfg.ctcvr_weight * l_ctcvr
        return total, {"loss_ctr": l_ctr.detach(), "loss_ctcvr": l_ctcvr.detach()}
