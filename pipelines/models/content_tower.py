"""Content tower with the triplet hinge loss (industry practice, MODELS.md §7), plus a content-quality head.

f(content) -> v ∈ R^d, ||v|| = 1, from what a platform has when an item is published: its category, its
keywords and a pretrained-style content embedding. Trained on triplets (a, b+, b-) with

    L(a, b+, b-) = max{0, cos(a, b-) + m - cos(a, b+)}

(a the anchor, b+ an item the same users engaged with, b- a sampled item; margin m ≈ 0.2-0.5), averaged over
every negative of a triplet. With ``hard_negatives`` each anchor also takes the most similar *other* triplet's
positive in the batch as one more negative (cheap: one [B, B] matrix of cosines).

The quality head [our choice, MODELS.md is silent] regresses an item's observed, position-debiased engagement (log
of clicks over expected clicks, smoothed; see ``pipelines.training.content_data``), weighted by how much evidence
the item has: the platform's "predicted content quality" for an item with no history. By default it is a linear
read-out of the standardised content vector, trained with the tower: the target is noisy (one window of clicks)
and only ~10^3 items carry it, and on the simulator (3 seeds, 8,000 users, ~390 held-out items each) the
linear read-out ranked held-out items by hidden quality at Spearman 0.26, an MLP head on the shared trunk at
0.10, an MLP on the content vector at 0.16 and a linear head over all inputs (keyword embeddings overfit) at
0.13. ``quality_input="trunk"`` or ``"vector"`` make the quality shape the trunk or the vector instead.

Inputs (from :class:`pipelines.training.content_data.ContentEncoder`), per item slot:

* ``tokens`` [..., 1 + L] int64: column 0 the category index (0 = unseen or dropped), columns 1..L keyword
  indices (0 = padding or unseen keyword);
* ``content`` [..., C] float: the content vector, standardised with the training items' mean and std.

A training batch holds S = 2 + K slots per row (anchor, positive, K negatives): ``tokens`` [B, S, 1 + L],
``content`` [B, S, C], ``item`` [B, S] (ids, to keep an anchor's own positive out of its hard negatives),
``quality`` [B, S] targets and ``quality_weight`` [B, S] (0 = no evidence).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F

from pipelines.models.layers import MLP, Tower


@dataclass(frozen=True)
class ContentSpec:
    """What the encoder gives the tower: vocabulary sizes (without row 0), keyword slots, content vector width."""

    n_categories: int
    n_keywords: int
    max_keywords: int
    content_dim: int


class ContentTowerConfig(BaseModel):
    """Sizes and loss of the content tower. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dim: int = Field(32, ge=2, description="Width of the output vector.")
    inputs: list[Literal["category", "keywords", "content_vector"]] = Field(
        default_factory=lambda: ["category", "keywords", "content_vector"], min_length=1,
        description="The content fields the tower reads (an ablation reads fewer).",
    )  # fmt: skip
    embed_dim: int = Field(16, ge=1, description="Category and keyword embeddings.")
    hidden: list[int] = Field(default_factory=lambda: [64], min_length=1, description="Trunk MLP.")
    dropout: float = Field(0.0, ge=0, lt=1)
    field_dropout: float = Field(
        0.1, ge=0, lt=1, description="Training share of items whose category, and apart whose keywords, are blanked: "
        "row 0 learns the unseen category, and the tower keeps working from the content vector alone.",
    )  # fmt: skip
    margin: float = Field(
        0.5, ge=0, le=2, description="m of the triplet hinge (MODELS.md: 0.2-0.5; on the simulator 0.5 found more "
        "same-topic neighbours than 0.3: recall@10 0.92 against 0.89).",
    )  # fmt: skip
    hard_negatives: bool = Field(False, description="Add the hardest in-batch other positive as a negative.")
    quality_input: Literal["content_vector", "trunk", "vector"] = Field(
        "content_vector", description="What the quality head reads: the content vector, the shared trunk, or the "
        "output vector (which then has to carry the quality itself).",
    )  # fmt: skip
    quality_hidden: list[int] = Field(default_factory=list, description="Quality head MLP (empty: linear).")
    quality_weight: float = Field(0.5, ge=0, description="Weight of the quality regression in the loss.")


def triplet_hinge(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, margin: float) -> torch.Tensor:
    """The triplet hinge of every (anchor, positive, negative): max{0, cos(a, b-) + m - cos(a, b+)}.

    Args:
        anchor: [B, d] vectors (normalised or not: cosines are computed).
        positive: [B, d].
        negatives: [B, K, d].
        margin: m.

    Returns:
        [B, K] losses.
    """
    pos = F.cosine_similarity(anchor, positive, dim=-1)  # [B]
    neg = F.cosine_similarity(anchor.unsqueeze(1), negatives, dim=-1)  # [B, K]
    return torch.clamp_min(neg + margin - pos.unsqueeze(1), 0.0)


class ContentTower(nn.Module):
    """Category, keywords and content vector -> unit vector [N, dim] and a quality score [N]."""

    config_class = ContentTowerConfig

    def __init__(self, spec: ContentSpec, cfg: ContentTowerConfig) -> None:
        super().__init__()
        self.spec, self.cfg = spec, cfg
        self.category = nn.Embedding(spec.n_categories + 1, cfg.embed_dim)  # row 0: unseen / dropped
        self.keywords = nn.EmbeddingBag(spec.n_keywords + 1, cfg.embed_dim, mode="mean", padding_idx=0)
        for table in (self.category, self.keywords):
            nn.init.normal_(table.weight, std=0.1)
        width = {"category": cfg.embed_dim, "keywords": cfg.embed_dim, "content_vector": spec.content_dim}
        self.trunk = MLP(sum(width[name] for name in cfg.inputs), cfg.hidden, cfg.dropout)
        self.project = nn.Linear(self.trunk.output_dim, cfg.dim)
        head_in = {"content_vector": spec.content_dim, "trunk": self.trunk.output_dim, "vector": cfg.dim}
        self.quality = Tower(head_in[cfg.quality_input], cfg.quality_hidden)

    def encode(self, tokens: torch.Tensor, content: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Items -> (vectors [N, dim], unit norm; quality [N]).

        Args:
            tokens: [N, 1 + L] category and keyword indices.
            content: [N, C] standardised content vectors.
        """
        category, keywords = tokens[:, 0], tokens[:, 1:]
        if self.training and self.cfg.field_dropout > 0:
            n = len(tokens)
            category = torch.where(torch.rand(n) < self.cfg.field_dropout, 0, category)
            keywords = torch.where((torch.rand(n) < self.cfg.field_dropout).unsqueeze(1), 0, keywords)
        parts = []
        if "category" in self.cfg.inputs:
            parts.append(self.category(category))  # [N, e]
        if "keywords" in self.cfg.inputs:
            parts.append(self.keywords(keywords))  # [N, e]: mean over the item's known keywords, 0 without any
        if "content_vector" in self.cfg.inputs:
            parts.append(content)  # [N, C]
        x = torch.cat(parts, dim=1)  # [N, e + e + C] with every input
        h = self.trunk(x)  # [N, h]
        v = F.normalize(self.project(h), dim=1)  # [N, dim]
        head = {"content_vector": content, "trunk": h, "vector": v}[self.cfg.quality_input]  # [N, C | h | dim]
        return v, self.quality(head)  # [N, dim], [N]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens, content = batch["tokens"], batch["content"]  # [B, S, 1 + L], [B, S, C]
        b, s = tokens.shape[:2]
        vector, quality = self.encode(tokens.reshape(b * s, -1), content.reshape(b * s, -1))
        return {"vector": vector.reshape(b, s, -1), "quality": quality.reshape(b, s)}  # [B, S, dim], [B, S]

    def negatives(self, batch: dict[str, torch.Tensor], vector: torch.Tensor) -> torch.Tensor:
        """The sampled negatives [B, K, d], plus with ``hard_negatives`` the hardest in-batch other positive."""
        anchor, positive, sampled = vector[:, 0], vector[:, 1], vector[:, 2:]  # [B, d], [B, d], [B, K, d]
        if not self.cfg.hard_negatives or len(vector) < 2:
            return sampled
        item = batch["item"]  # [B, S]
        cosine = anchor @ positive.T  # [B, B]: anchor i against the positive of row j
        # never the anchor itself nor its own positive (the same item can be another row's positive)
        own = (item[:, 1].unsqueeze(0) == item[:, :1]) | (item[:, 1].unsqueeze(0) == item[:, 1:2])  # [B, B]
        hardest = cosine.masked_fill(own, -2.0).argmax(dim=1)  # [B]
        return torch.cat([sampled, positive[hardest].unsqueeze(1)], dim=1)  # [B, K + 1, d]

    def loss(self, batch: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """Triplet hinge (mean over triplets and negatives) + ``quality_weight`` x weighted MSE of the quality."""
        vector = out["vector"]  # [B, S, d]
        hinge = triplet_hinge(vector[:, 0], vector[:, 1], self.negatives(batch, vector), self.cfg.margin).mean()
        weight = batch["quality_weight"]  # [B, S]
        quality = (weight * (out["quality"] - batch["quality"]) ** 2).sum() / weight.sum().clamp_min(1e-6)
        return hinge + self.cfg.quality_weight * quality, {"triplet": hinge.detach(), "quality": quality.detach()}
