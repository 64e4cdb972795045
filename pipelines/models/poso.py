"""POSO (Dai et al. 2021, "POSO: Personalized Cold Start Modules for Large-scale Recommender Systems").

New users are a small minority of the training data, so their distinct behaviour is drowned out in shared
layers. POSO gives each user-group its own re-weighting of a module's outputs, computed from a personalization
code ``x_pc`` (raw scalars such as the log view count and ``is_new_user``, never normalised away):
``g(x_pc) = C·σ(MLP(x_pc))``. With ``C = 2`` and a zero-initialised output layer the gate starts at 1, so a POSO
model begins as its plain counterpart.

Where the gates are applied:

* POSO(MLP): every hidden layer of :class:`~pipelines.models.layers.MLP` built with ``pc_dim``,
  ``x̂ = g(x_pc) ⊙ ReLU(Wx)`` (one scalar per unit);
* POSO(MMoE) and POSO(PLE) in :mod:`pipelines.models.mtl`: one scalar per expert, shared by the tasks, that
  re-weights each expert's output before the task gates.
"""

from __future__ import annotations

import torch
from torch import nn


class PosoGate(nn.Module):
    """POSO gate g(x_pc) = C·σ(MLP(x_pc)): ≈1 at init with C=2 and zero output weights."""

    def __init__(self, pc_dim: int, out_dim: int, hidden: int = 32, scale: float = 2.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(pc_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
        self.scale = scale
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, pc: torch.Tensor) -> torch.Tensor:
        # pc [B, P] -> [B, out_dim]
        return self.scale * torch.sigmoid(self.net(pc))
