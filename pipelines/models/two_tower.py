"""Two-tower retrieval with the sampling-bias-corrected in-batch softmax (Yi et al., RecSys 2019; MODELS.md §8).

u = f_user(user id, profile, recent clicks), v = f_item(item id, category, keywords, content), both L2-normalised;
s(x, y) = <u, v> / τ. Trained on clicked (user, item) pairs: each row's positive is its own item, the other rows'
items of the batch are its negatives, with the logQ correction

    s^c(x_i, y_j) = s(x_i, y_j) - log p_j,    L = -mean_i log softmax_j s^c(x_i, y_j)[i]

p_j the probability that item j is in a batch. In-batch negatives are drawn by popularity (an item is a negative
as often as it is clicked), so without the correction popular items are pushed down too hard and the scores
learn the user's preference divided by the click share instead of the preference. p_j comes by default
(``logq="counts"``) from the window's click counts, exact on the fixed window ``train_models`` reads for several
epochs; ``logq="streaming"`` uses :class:`StreamingFrequency` (the paper's per-hashed-item average gap between
sightings), which needs no pass over the data and follows drift, but is noisy at a window's few hundred steps.

Cold start (MODELS.md §6): user and item ids rarer than their minimum count share row 0 of their table, and id
dropout looks a share of training rows up as row 0, so row 0 is the trained "unknown id"; a new item gets
row 0 plus its own category, keywords and content, which keep new items apart.

Inputs per row of a batch (see :mod:`pipelines.training.two_tower_data`):

* ``user`` [B] int64 user index (0 = unknown); ``profile`` [B, P] int64 profile field indices (0 = unknown);
  ``history`` [B, L] int64 item indices of the user's last clicks, newest first (0 = padding / unknown);
* ``item`` [B] int64 item index (0 = unknown); ``tokens`` [B, 1 + K] category and keyword indices;
  ``content`` [B, C] float32 standardised content (raw vector, plus the content tower's vector when used);
* ``item_id`` [B] int64 raw ids (hashing for the frequency estimate, duplicate positives); ``log_q`` [B] float32
  log of the window's click share of the item (used with ``logq="counts"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F

from pipelines.models.layers import MLP

HASH_MULTIPLIER = 2654435761  # Knuth's multiplicative hash: consecutive ids spread over the buckets


@dataclass(frozen=True)
class TwoTowerSpec:
    """What the encoder gives the towers: vocabulary sizes (without row 0) and input widths."""

    n_users: int
    n_items: int
    profile: tuple[int, ...]  # cardinality of each profile field
    n_categories: int
    n_keywords: int
    max_keywords: int
    content_dim: int


class TwoTowerConfig(BaseModel):
    """Sizes and loss of the two-tower model. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dim: int = Field(32, ge=2, description="Width of the user and item vectors (what the ANN pools index).")
    embed_dim: int = Field(16, ge=1, description="Id, profile, category and keyword embeddings.")
    hidden: list[int] = Field(default_factory=lambda: [64], min_length=1, description="Each tower's MLP.")
    temperature: float = Field(
        0.05, gt=0, description="τ of s = <u, v>/τ. Unit vectors bound <u, v> to [-1, 1]: without a small τ the "
        "softmax cannot separate a positive from the batch (MODELS.md §8: τ ≈ 0.05).",
    )  # fmt: skip
    logq: Literal["streaming", "counts", "none"] = Field(
        "counts", description="Where p_j of the correction comes from: the window's click counts, the paper's "
        "streaming estimate, or no correction (the ablation). Counts: training reads a fixed window for several "
        "epochs, where the share of clicks is exact; the streaming estimate is built for one pass over an endless "
        "stream and, at ~100 steps an epoch, stays noisy for tail items (simulator, 8 days of 6,000 users, 3 "
        "seeds: recall@100 0.639 with counts, 0.564 streaming, popularity 0.542; benchmarks/README.md).",
    )  # fmt: skip
    freq_alpha: float = Field(
        0.05, gt=0, le=1, description="Learning rate α of the streaming gap average. The paper's ~0.01 suits "
        "millions of steps; a window here is a few hundred steps an epoch, and 0.05 settles within ~20 sightings.",
    )  # fmt: skip
    freq_buckets: int = Field(1 << 16, ge=16, description="Hash buckets of the frequency estimate.")
    id_dropout: float = Field(
        0.05, ge=0, lt=1, description="Training share of rows whose user id and, apart, item id are looked up as "
        "row 0 (MODELS.md §6): row 0 learns the unknown case on the whole distribution, not only the long tail.",
    )  # fmt: skip
    mask_duplicates: bool = Field(
        True, description="A row's positive item appearing again in the batch is not its negative (two users "
        "clicked it): those logits are masked instead of pushed down.",
    )  # fmt: skip


class StreamingFrequency(nn.Module):
    """The paper's streaming frequency estimate: per hashed item, the average number of steps between sightings.

    At step t, for each item y of the batch: B[h(y)] <- (1 - α) B[h(y)] + α (t - A[h(y)]), A[h(y)] <- t; then
    p(y) = 1 / B[h(y)]. An item never seen is taken as seen once in t steps, and its first sighting sets B to the
    gap so far. Buffers, so the estimate is saved
    with the weights (and a resumed run continues it).
    """

    def __init__(self, buckets: int, alpha: float) -> None:
        super().__init__()
        self.buckets, self.alpha = buckets, alpha
        self.register_buffer("last", torch.zeros(buckets, dtype=torch.float64))  # A: step of the last sighting
        self.register_buffer("gap", torch.zeros(buckets, dtype=torch.float64))  # B: average gap
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))

    def bucket(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids.to(torch.int64) * HASH_MULTIPLIER) % self.buckets

    @torch.no_grad()
    def update(self, ids: torch.Tensor) -> None:
        """One step: the batch's items were seen (each distinct bucket once)."""
        self.step += 1
        h = torch.unique(self.bucket(ids))
        t = self.step.to(torch.float64)
        gap = t - self.last[h]
        # First sighting: the gap itself, not α·gap (the paper's zero start is biased low until ~1/α sightings,
        # which a rare item never reaches in a window: it would pass as popular).
        self.gap[h] = torch.where(self.last[h] == 0, gap, (1 - self.alpha) * self.gap[h] + self.alpha * gap)
        self.last[h] = t

    def log_p(self, ids: torch.Tensor) -> torch.Tensor:
        """[B] log p of each id (float32)."""
        h = self.bucket(ids)
        never = self.last[h] == 0
        gap = torch.where(never, self.step.clamp_min(1).to(torch.float64), self.gap[h])
        return -torch.log(gap.clamp_min(1.0)).to(torch.float32)


def corrected_logits(
    user: torch.Tensor, item: torch.Tensor, log_q: torch.Tensor | None, temperature: float,
    item_ids: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """[B, B] logits s^c(x_i, y_j) = <u_i, v_j>/τ - log p_j of every user against every in-batch item.

    Args:
        user: [B, d] user vectors; item: [B, d] item vectors (row i is row i's positive).
        log_q: [B] log p_j, or None for no correction.
        item_ids: [B] raw ids: a column holding row i's own item again (j != i) is masked to -inf.
    """
    logits = user @ item.T / temperature  # [B, B]
    if log_q is not None:
        logits = logits - log_q.unsqueeze(0)
    if item_ids is not None:
        same = item_ids.unsqueeze(1) == item_ids.unsqueeze(0)  # [B, B]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    return logits


class TwoTower(nn.Module):
    """User tower and item tower -> unit vectors [N, dim]; the batch softmax with logQ correction as its loss."""

    config_class = TwoTowerConfig

    def __init__(self, spec: TwoTowerSpec, cfg: TwoTowerConfig) -> None:
        super().__init__()
        self.spec, self.cfg = spec, cfg
        e = cfg.embed_dim
        self.users = nn.Embedding(spec.n_users + 1, e)  # row 0: unknown / rare users
        self.items = nn.Embedding(spec.n_items + 1, e)  # row 0: unknown / rare / new items; shared with history
        self.profile = nn.ModuleList(nn.Embedding(n + 1, e) for n in spec.profile)
        self.category = nn.Embedding(spec.n_categories + 1, e)
        self.keywords = nn.EmbeddingBag(spec.n_keywords + 1, e, mode="mean", padding_idx=0)
        for table in (self.users, self.items, self.category, self.keywords, *self.profile):
            nn.init.normal_(table.weight, std=0.1)
        self.user_mlp = MLP(e * (2 + len(spec.profile)), cfg.hidden)
        self.user_out = nn.Linear(self.user_mlp.output_dim, cfg.dim)
        self.item_mlp = MLP(3 * e + spec.content_dim, cfg.hidden)
        self.item_out = nn.Linear(self.item_mlp.output_dim, cfg.dim)
        self.frequency = StreamingFrequency(cfg.freq_buckets, cfg.freq_alpha)
        self.block = 1024  # rows per in-batch softmax when validating; the trainer sets it to the batch size

    def _drop(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.training or self.cfg.id_dropout <= 0:
            return ids
        return torch.where(torch.rand(len(ids)) < self.cfg.id_dropout, 0, ids)

    def encode_users(self, user: torch.Tensor, profile: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """[N] user indices, [N, P] profile indices, [N, L] history item indices -> [N, dim] unit vectors."""
        seen = (history > 0).unsqueeze(-1).float()  # [N, L, 1]: padding and unknown items are left out
        clicked = (self.items(history) * seen).sum(1) / seen.sum(1).clamp_min(1.0)  # [N, e]; zeros: no history
        parts = [self.users(self._drop(user)), clicked, *(t(profile[:, i]) for i, t in enumerate(self.profile))]
        h = self.user_mlp(torch.cat(parts, dim=1))  # [N, hidden]
        return F.normalize(self.user_out(h), dim=1)  # [N, dim]

    def encode_items(self, item: torch.Tensor, tokens: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        """[N] item indices, [N, 1 + K] category and keyword indices, [N, C] content -> [N, dim] unit vectors."""
        parts = [self.items(self._drop(item)), self.category(tokens[:, 0]), self.keywords(tokens[:, 1:]), content]
        h = self.item_mlp(torch.cat(parts, dim=1))  # [N, hidden]
        return F.normalize(self.item_out(h), dim=1)  # [N, dim]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        user = self.encode_users(batch["user"], batch["profile"], batch["history"])  # [B, dim]
        item = self.encode_items(batch["item"], batch["tokens"], batch["content"])  # [B, dim]
        return {"user": user, "item": item}

    def log_q(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """[B] log p_j of the batch's items by ``cfg.logq``; training steps update the streaming estimate first."""
        if self.cfg.logq == "none":
            return None
        if self.cfg.logq == "counts":
            return batch["log_q"]
        if self.training:
            self.frequency.update(batch["item_id"])
        return self.frequency.log_p(batch["item_id"])

    def loss(self, batch: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """Mean over rows of -log softmax of the own item among the in-batch items, corrected by log p.

        A validation chunk larger than ``block`` rows is cut into blocks of that many (a training-sized batch
        each): one [B, B] softmax over 65k rows would hold 17 GB.
        """
        log_q = self.log_q(batch)
        ids = batch["item_id"] if self.cfg.mask_duplicates else None
        n, total = len(out["user"]), 0.0
        step = n if self.training else self.block
        for s in range(0, n, step):
            part = slice(s, s + step)
            logits = corrected_logits(out["user"][part], out["item"][part],
                                      None if log_q is None else log_q[part], self.cfg.temperature,
                                      None if ids is None else ids[part])  # fmt: skip
            target = torch.arange(len(logits))
            total = total + F.cross_entropy(logits, target, reduction="sum")
        loss = total / max(n, 1)
        return loss, {"softmax": loss.detach()}
