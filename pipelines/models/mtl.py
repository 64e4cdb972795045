"""MMoE (Ma et al., KDD 2018) and PLE / CGC (Tang et al., RecSys 2020), with POSO and UIE switches.

Two tasks, CTR and CVR. ``loss_mode="esmm"`` trains CTR and CTCVR = CTR·CVR over every impression (entire
space); ``"masked"`` trains CVR on clicked rows only (PLE's δ-masked task loss).

POSO(MMoE/PLE) (Dai et al. 2021, :mod:`pipelines.models.poso`): a gate g(x_pc) gives one scalar per expert,
C·σ(·), shared across tasks, that re-weights each expert's output per sample before the task gates.
UIE (Liu et al. 2024): the enhancement vectors of :class:`~pipelines.models.uie.UIE` are concatenated to the
input of the first extraction level.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from pipelines.models.base import (
    InputEncoder,
    InputSpec,
    ModelConfig,
    RankingModel,
    clicked_cvr_loss,
    ctcvr_loss,
    ctr_cvr_outputs,
    ctr_loss,
)
from pipelines.models.layers import Experts, Gate, Tower
from pipelines.models.poso import PosoGate
from pipelines.models.uie import UIE, UIEConfig

TASKS = ("ctr", "cvr")


class MTLConfig(ModelConfig):
    expert: list[int] = Field(default_factory=lambda: [64])
    gate_dropout: float = Field(0.0, ge=0, lt=1)
    loss_mode: Literal["esmm", "masked"] = "esmm"
    uie: UIEConfig | None = None


class MMoEConfig(MTLConfig):
    n_experts: int = Field(4, ge=1)


class PLEConfig(MTLConfig):
    levels: int = Field(2, ge=1)
    specific_experts: int = Field(1, ge=0, description="Task-specific experts per task and level (m_k).")
    shared_experts: int = Field(1, ge=0, description="Shared experts per level (m_s).")


class _MultiTask(RankingModel):
    """Input (+ UIE enhancement), an extraction network producing one vector per task, towers and losses."""

    def __init__(self, spec: InputSpec, cfg: MTLConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = InputEncoder(spec, cfg.embed_dim)
        self.uie = UIE(spec, self.encoder.embedding, cfg.uie) if cfg.uie else None
        self.input_dim = self.encoder.output_dim + (self.uie.output_dim if self.uie else 0)

    def _input(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.encoder(batch)
        if self.uie is not None:
            x = torch.cat([x, self.uie(batch)], dim=1)  # [B, input + UIE]
        return x

    def _towers(self, spec_dim: int) -> None:
        self.towers = nn.ModuleDict({t: Tower(spec_dim, self.cfg.tower, self.cfg.dropout) for t in TASKS})

    def forward(self, batch):
        fused = self.extract(self._input(batch), batch.get("pc"))  # task -> [B, h]
        return ctr_cvr_outputs(self.towers["ctr"](fused["ctr"]), self.towers["cvr"](fused["cvr"]))

    def loss(self, batch, out):
        click, conversion = batch["click"], batch["conversion"]
        l_ctr = ctr_loss(out, click)
        if self.cfg.loss_mode == "esmm":
            l_second, name = ctcvr_loss(out, click, conversion), "loss_ctcvr"
        else:
            l_second, name = clicked_cvr_loss(out, click, conversion), "loss_cvr"
        total = l_ctr + l_second
        logs = {"loss_ctr": l_ctr.detach(), name: l_second.detach()}
        if self.uie is not None:
            aux, uie_logs = self.uie.loss(batch)
            total = total + aux
            logs |= uie_logs
        return total, logs


class MMoE(_MultiTask):
    config_class = MMoEConfig

    def __init__(self, spec: InputSpec, cfg: MMoEConfig) -> None:
        super().__init__(spec, cfg)
        self.experts = Experts(cfg.n_experts, self.input_dim, cfg.expert)
        self.gates = nn.ModuleDict({t: Gate(self.input_dim, cfg.n_experts, cfg.gate_dropout) for t in TASKS})
        self.poso = PosoGate(spec.pc_dim, cfg.n_experts, cfg.poso_hidden) if cfg.poso else None
        self._towers(self.experts.output_dim)

    def extract(self, x: torch.Tensor, pc: torch.Tensor | None) -> dict[str, torch.Tensor]:
        experts = self.experts(x)  # [B, n, h]
        if self.poso is not None:
            experts = self.poso(pc).unsqueeze(-1) * experts  # one scalar per expert, shared by the tasks
        return {t: self.gates[t](x, experts) for t in TASKS}


class _CGCLevel(nn.Module):
    """One extraction level: task-specific and shared experts, task gates, and (not last) a shared gate."""

    def __init__(self, in_dim: int, cfg: PLEConfig, last: bool, pc_dim: int) -> None:
        super().__init__()
        self.specific = nn.ModuleDict({t: Experts(cfg.specific_experts, in_dim, cfg.expert) for t in TASKS})
        self.shared = Experts(cfg.shared_experts, in_dim, cfg.expert)
        per_task = cfg.specific_experts + cfg.shared_experts
        self.task_gates = nn.ModuleDict({t: Gate(in_dim, per_task, cfg.gate_dropout) for t in TASKS})
        n_all = cfg.specific_experts * len(TASKS) + cfg.shared_experts
        self.shared_gate = None if last else Gate(in_dim, n_all, cfg.gate_dropout)
        self.poso = PosoGate(pc_dim, n_all, cfg.poso_hidden) if cfg.poso else None
        self.output_dim = cfg.expert[-1]

    def forward(
        self, task_in: dict[str, torch.Tensor], shared_in: torch.Tensor, pc: torch.Tensor | None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        specific = {t: self.specific[t](task_in[t]) for t in TASKS}  # task -> [B, m_k, h]
        shared = self.shared(shared_in)  # [B, m_s, h]
        if self.poso is not None:
            weights = self.poso(pc).unsqueeze(-1)  # [B, n_all, 1]: a scalar per expert of the level
            sizes = [specific[t].shape[1] for t in TASKS]
            chunks = torch.split(weights, [*sizes, shared.shape[1]], dim=1)
            specific = {t: chunks[i] * specific[t] for i, t in enumerate(TASKS)}
            shared = chunks[-1] * shared
        out = {t: self.task_gates[t](task_in[t], torch.cat([specific[t], shared], dim=1)) for t in TASKS}
        shared_out = None
        if self.shared_gate is not None:
            everything = torch.cat([*(specific[t] for t in TASKS), shared], dim=1)  # [B, n_all, h]
            shared_out = self.shared_gate(shared_in, everything)
        return out, shared_out


class PLE(_MultiTask):
    config_class = PLEConfig

    def __init__(self, spec: InputSpec, cfg: PLEConfig) -> None:
        super().__init__(spec, cfg)
        dims = [self.input_dim] + [cfg.expert[-1]] * (cfg.levels - 1)
        self.levels = nn.ModuleList(
            _CGCLevel(d, cfg, last=i == cfg.levels - 1, pc_dim=spec.pc_dim) for i, d in enumerate(dims)
        )
        self._towers(cfg.expert[-1])

    def extract(self, x: torch.Tensor, pc: torch.Tensor | None) -> dict[str, torch.Tensor]:
        task_in, shared_in = {t: x for t in TASKS}, x
        for level in self.levels:
            task_in, shared_in = level(task_in, shared_in, pc)
        return task_in
