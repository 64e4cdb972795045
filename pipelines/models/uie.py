"""UIE: user-interest enhancement by stream clustering and memory (Liu et al., Tencent, arXiv 2405.13238).

Three enhancement vectors, concatenated to PLE's input (placement: our choice, see ../shared/MODELS.md §5):

* UPE: an auxiliary user tower maps stop-gradient user-profile embeddings to v_u; N centroids U over v_u are
  updated in a streaming way (nearest centroid pulled toward its members at rate ρ, deltas averaged per
  centroid, on a sub-batch balanced across user types); the top-k1 positively similar centroids, softmax
  weighted, give r, and e_upe = ReLU(W r + b). An auxiliary BCE(click, σ(v_u·v_i)) trains the towers.
* UCBE: a per-user memory P_u pulled toward the top-k2 item centroids of the items the user engaged with
  (positive rows only); e_ucbe = FC(P_u) read before this batch's write.
* UCSE: each item of the recent-click sequence replaced by its nearest item centroid, combined by target
  attention with the candidate item.

Centroids are buffers, never parameters: the main loss cannot move them. Collapse onto a few centroids is the
known failure without a warm start (and, as the user tower keeps training, even after one): ``usage`` counts
assignments (log its entropy), ``warm_start`` seeds the centroids from sampled vectors (k-means++), and every
``reseed_every`` updates the centroids that drew under a tenth of their fair share are moved onto members.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from pipelines.models.base import InputSpec
from pipelines.models.layers import MLP, EmbeddingLayer


class UIEConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dim: int = Field(16, ge=2, description="d_a: width of v_u, v_i and of the memories.")
    user_centroids: int = Field(64, ge=2)
    item_centroids: int = Field(64, ge=2)
    top_k: int = Field(5, ge=1, description="k1 = k2.")
    rate: float = Field(0.05, gt=0, le=1, description="ρ: pull of a centroid (and of P_u) toward its members.")
    reseed_every: int = Field(
        20, ge=0, description="Every this many updates, move starved centroids onto members (0 = never)."
    )
    aux_weight: float = Field(0.1, ge=0)
    use_upe: bool = True
    use_ucbe: bool = True
    use_ucse: bool = True


class StreamingCentroids(nn.Module):
    """N centroids updated by nearest assignment with rate ρ; buffers only."""

    def __init__(self, n: int, dim: int, rate: float, reseed_every: int = 0) -> None:
        super().__init__()
        self.rate = rate
        self.reseed_every = reseed_every
        self.register_buffer("centroids", torch.randn(n, dim) * 0.1)
        self.register_buffer("usage", torch.zeros(n))
        self.register_buffer("recent_usage", torch.zeros(n))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def assign(self, v: torch.Tensor) -> torch.Tensor:
        return torch.cdist(v, self.centroids).argmin(dim=1)  # [B]

    @torch.no_grad()
    def update(self, v: torch.Tensor) -> torch.Tensor:
        """Pull each assigned centroid toward the mean of its members: U_c += ρ·mean(v - U_c)."""
        if v.shape[0] == 0:
            return torch.zeros(0, dtype=torch.long, device=v.device)
        c = self.assign(v)
        n = self.centroids.shape[0]
        counts = torch.bincount(c, minlength=n).to(v.dtype)
        delta = torch.zeros_like(self.centroids).index_add_(0, c, v - self.centroids[c])
        hit = counts > 0
        self.centroids[hit] += self.rate * delta[hit] / counts[hit].unsqueeze(1)
        self.usage += counts
        self.recent_usage += counts
        self.updates += 1
        if self.reseed_every and int(self.updates) % self.reseed_every == 0:
            # Centroids that drew under a tenth of their fair share lately are dead: move them onto members.
            starved = self.recent_usage < self.recent_usage.sum() / (10 * n)
            if starved.any():
                pick = torch.randint(len(v), (int(starved.sum()),), device=v.device)
                self.centroids[starved] = v[pick]
            self.recent_usage.zero_()
        return c

    def retrieve(self, q: torch.Tensor, k: int) -> torch.Tensor:
        """Σ softmax-weighted top-k centroids with positive similarity; 0 where none is positive. [B, d]"""
        scores = q @ self.centroids.T  # [B, N]
        top, idx = scores.topk(min(k, scores.shape[1]), dim=1)
        top = top.masked_fill(top <= 0, float("-inf"))
        weights = torch.softmax(top, dim=1).nan_to_num(0.0)  # all masked -> zeros
        return torch.einsum("bk,bkd->bd", weights, self.centroids[idx])

    def usage_entropy(self) -> float:
        """Entropy of assignments / log N: 1 = all centroids used evenly, 0 = collapse onto one."""
        p = self.usage / self.usage.sum().clamp(min=1)
        nz = p[p > 0]
        return float(-(nz * nz.log()).sum() / math.log(len(p)))

    @torch.no_grad()
    def warm_start(self, vectors: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """k-means++ seeding from ``vectors``."""
        n = self.centroids.shape[0]
        chosen = [int(torch.randint(len(vectors), (1,), generator=generator))]
        dist = torch.cdist(vectors, vectors[chosen[-1]].unsqueeze(0)).squeeze(1) ** 2
        for _ in range(1, n):
            probs = dist / dist.sum() if dist.sum() > 0 else torch.full_like(dist, 1 / len(dist))
            chosen.append(int(torch.multinomial(probs, 1, generator=generator)))
            dist = torch.minimum(dist, torch.cdist(vectors, vectors[chosen[-1]].unsqueeze(0)).squeeze(1) ** 2)
        self.centroids.copy_(vectors[chosen])
        self.usage.zero_()

    @torch.no_grad()
    def reseed_dead(self, vectors: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Move never-assigned centroids onto random vectors; returns how many moved."""
        dead = torch.nonzero(self.usage == 0).squeeze(1)
        if len(dead) and len(vectors):
            pick = torch.randint(len(vectors), (len(dead),), generator=generator)
            self.centroids[dead] = vectors[pick]
        return len(dead)


class UIE(nn.Module):
    """The three enhancement vectors for a batch, [B, output_dim]; see the module docstring."""

    def __init__(self, spec: InputSpec, embedding: EmbeddingLayer, cfg: UIEConfig) -> None:
        super().__init__()
        if not spec.user_fields:
            raise ValueError("UIE needs the user profile fields (InputSpec.user_fields)")
        self.cfg, self.spec, self.embedding = cfg, spec, embedding
        d, e = cfg.dim, embedding.dim
        self.user_tower = MLP(len(spec.user_fields) * e, [2 * d, d])
        self.item_tower = MLP(e, [2 * d, d])
        self.user_memory = StreamingCentroids(cfg.user_centroids, d, cfg.rate, cfg.reseed_every)
        self.item_memory = StreamingCentroids(cfg.item_centroids, e, cfg.rate, cfg.reseed_every)
        self.upe = nn.Linear(d, d)
        self.register_buffer("user_state", torch.zeros(spec.n_users + 1, e))  # P_u, zeros for unseen users
        self.ucbe = nn.Linear(e, d)
        parts = [cfg.use_upe, cfg.use_ucbe, cfg.use_ucse]
        self.output_dim = d * cfg.use_upe + d * cfg.use_ucbe + e * cfg.use_ucse
        if not any(parts):
            raise ValueError("enable at least one of UPE, UCBE, UCSE")

    def _user_vector(self, batch) -> torch.Tensor:
        fields = [self.embedding.tables[f](batch["sparse"][:, f]).detach() for f in self.spec.user_fields]
        return self.user_tower(torch.cat(fields, dim=1))  # v_u [B, d]; sg() on the shared embeddings

    def _item_embedding(self, items: torch.Tensor) -> torch.Tensor:
        return self.embedding.tables[self.spec.item_field](items).detach()  # sg()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = []
        item = self._item_embedding(batch["sparse"][:, self.spec.item_field])  # [B, e]
        if self.cfg.use_upe:
            v_u = self._user_vector(batch)
            if self.training:
                self.user_memory.update(self._balanced(v_u.detach(), batch.get("user_type")))
            r = self.user_memory.retrieve(v_u.detach(), self.cfg.top_k)  # r = Σ a_n sg(U_n)
            out.append(torch.relu(self.upe(r)))
        if self.cfg.use_ucbe:
            users = batch["user"].clamp(0, self.spec.n_users)
            out.append(self.ucbe(self.user_state[users]))  # read before this batch's write
            if self.training:
                self.item_memory.update(item)
                self._write_user_state(users, item, batch["click"])
        if self.cfg.use_ucse:
            out.append(self._sequence(batch.get("seq"), item))
        return torch.cat(out, dim=1)

    def _balanced(self, v: torch.Tensor, user_type: torch.Tensor | None) -> torch.Tensor:
        """A sub-batch with the same number of rows of every user type, so heavy users do not dominate."""
        if user_type is None:
            return v
        types = torch.unique(user_type)
        per_type = min(int((user_type == t).sum()) for t in types)
        keep = torch.cat([torch.nonzero(user_type == t).squeeze(1)[:per_type] for t in types])
        return v[keep]

    @torch.no_grad()
    def _write_user_state(self, users: torch.Tensor, item: torch.Tensor, click: torch.Tensor) -> None:
        positive = click > 0
        if not positive.any():
            return  # UCBE memory is unchanged without engagement
        target = self.item_memory.retrieve(item[positive], self.cfg.top_k)
        u = users[positive]
        self.user_state[u] += self.cfg.rate * (target - self.user_state[u])

    def _sequence(self, seq: torch.Tensor | None, item: torch.Tensor) -> torch.Tensor:
        if seq is None or seq.shape[1] == 0:
            return item.new_zeros(item.shape[0], self.embedding.dim)
        # Nothing here has a gradient (sg() embeddings, centroid buffers), so it is computed per centroid: each
        # distinct history item is assigned once, scores are item·centroid looked up by assignment, and the
        # weighted sum of the L clustered vectors is the weights scattered onto the N centroids, times U.
        # Equal to building the [B, L, e] tensor of clustered history items (tested), without it.
        with torch.no_grad():
            ids, inverse = torch.unique(seq, return_inverse=True)
            nearest = self.item_memory.assign(self._item_embedding(ids))[inverse]  # [B, L] centroid per position
            centroids = self.item_memory.centroids  # [N, e]
            e = centroids.shape[1]
            scores = torch.gather(item @ centroids.T, 1, nearest) / math.sqrt(e)  # [B, L]
            scores = scores.masked_fill(seq == 0, float("-inf"))
            weights = torch.softmax(scores, dim=1).nan_to_num(0.0)  # empty history -> zeros
            per_centroid = weights.new_zeros(len(seq), len(centroids)).scatter_add_(1, nearest, weights)  # [B, N]
            return per_centroid @ centroids  # [B, e]

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """Auxiliary BCE(click, σ(v_u·v_i)) for the towers (their inputs are stop-gradient embeddings)."""
        if not self.cfg.use_upe:
            zero = self.upe.weight.sum() * 0.0
            return zero, {}
        v_u = self._user_vector(batch)
        v_i = self.item_tower(self._item_embedding(batch["sparse"][:, self.spec.item_field]))
        logit = (v_u * v_i).sum(dim=1)
        aux = nn.functional.binary_cross_entropy_with_logits(logit, batch["click"])
        return self.cfg.aux_weight * aux, {"loss_uie_aux": aux.detach()}
