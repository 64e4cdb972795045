"""Shared layers: embeddings with a default row for unseen ids, MLPs (POSO-gated on request), experts and gates.

Batches are dicts of tensors (see :mod:`pipelines.training.dataset`):

* ``sparse`` [B, F] int64: categorical field indices; index 0 of every field is the default embedding used
  for unseen and brand-new ids (it is trained on the rare ids folded into it);
* ``dense`` [B, D] float: numeric features, standardized;
* ``pc`` [B, P] float: POSO's personalization code (raw scalars such as log view count, is_new_user; see
  :mod:`pipelines.models.poso`);
* ``seq`` [B, L] int64: recent clicked items (0 = padding), ``user`` [B] int64: user index for memories.
"""

from __future__ import annotations

import torch
from torch import nn

from pipelines.models.poso import PosoGate


class EmbeddingLayer(nn.Module):
    """One table per sparse field; row 0 of each is the default embedding for unseen / new ids."""

    def __init__(self, cardinalities: list[int], dim: int) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(max(c, 1) + 1, dim) for c in cardinalities)
        self.dim = dim
        for table in self.tables:
            nn.init.normal_(table.weight, std=0.01)

    @property
    def output_dim(self) -> int:
        return len(self.tables) * self.dim

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        # sparse [B, F] -> [B, F*d]
        return torch.cat([table(sparse[:, i]) for i, table in enumerate(self.tables)], dim=1)


class MLP(nn.Module):
    """Linear-ReLU(-dropout) stack; with ``pc_dim`` every layer is POSO-gated: x̂ = C·g(x_pc) ⊙ ReLU(Wx)."""

    def __init__(self, in_dim: int, hidden: list[int], dropout: float = 0.0, pc_dim: int = 0) -> None:
        super().__init__()
        dims = [in_dim, *hidden]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.gates = nn.ModuleList(PosoGate(pc_dim, b) for b in hidden) if pc_dim else None
        self.dropout = nn.Dropout(dropout)
        self.output_dim = dims[-1]

    def forward(self, x: torch.Tensor, pc: torch.Tensor | None = None) -> torch.Tensor:
        for i, linear in enumerate(self.linears):
            x = torch.relu(linear(x))
            if self.gates is not None:
                x = self.gates[i](pc) * x  # gate after the activation (POSO)
            x = self.dropout(x)
        return x


class Experts(nn.Module):
    """``n`` MLP experts of the same output width; output [B, n, h]."""

    def __init__(self, n: int, in_dim: int, hidden: list[int]) -> None:
        super().__init__()
        self.experts = nn.ModuleList(MLP(in_dim, hidden) for _ in range(n))
        self.output_dim = hidden[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not len(self.experts):
            return x.new_zeros(x.shape[0], 0, self.output_dim)
        return torch.stack([expert(x) for expert in self.experts], dim=1)  # [B, n, h]


class Gate(nn.Module):
    """Softmax gate over ``n`` experts from its input (bias-free linear), with optional dropout on the weights."""

    def __init__(self, in_dim: int, n: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, n, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        weights = self.dropout(torch.softmax(self.linear(x), dim=-1))  # [B, n]
        # a weighted sum over a handful of experts: elementwise, not a batched matmul of [1, n] x [n, h] blocks
        return (weights.unsqueeze(-1) * experts).sum(dim=1)  # [B, h]


class Tower(nn.Module):
    """Task tower: MLP then one logit."""

    def __init__(self, in_dim: int, hidden: list[int], dropout: float = 0.0, pc_dim: int = 0) -> None:
        super().__init__()
        self.mlp = MLP(in_dim, hidden, dropout, pc_dim) if hidden else None
        self.out = nn.Linear(hidden[-1] if hidden else in_dim, 1)

    def forward(self, x: torch.Tensor, pc: torch.Tensor | None = None) -> torch.Tensor:
        if self.mlp is not None:
            x = self.mlp(x, pc)
        return self.out(x).squeeze(-1)  # [B] logits


def log_sigmoid_pair(logit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log σ(a) and log(1 - σ(a)) computed stably."""
    return nn.functional.logsigmoid(logit), nn.functional.logsigmoid(-logit)


def bce_from_logs(log_p: torch.Tensor, log_1mp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy from log p and log(1-p) (finite at p ≈ 0 or 1)."""
    return -(target * log_p + (1 - target) * log_1mp).mean()


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, stable (Mächler 2012)."""
    x = x.clamp(max=-1e-12)
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))
