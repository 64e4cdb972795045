"""ID embeddings for items the ranker's vocabulary has never seen.

Two policies, picked by ``PolicyConfig.new_item_embedding``:

* ``"default"``: the input encoder already maps every unseen id to index 0, whose row is the learned default
  embedding (trained on the rare ids folded into it), so the service does nothing;
* ``"content_knn"``: the new item borrows the mean ID embedding of its ``k`` most content-similar known items
  (cosine on the content vector), counting only items with at least ``min_exposures`` exposures, whose
  embeddings have seen enough traffic to be trusted. With no qualifying neighbour it gets the default row.

The service writes the borrowed rows into a copy of the model's item table with :func:`extend_table` and points
the new ids at the appended rows.
"""

from __future__ import annotations

import numpy as np
import torch


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero (so their cosine to anything is 0)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


class NewItemEmbeddings:
    """Content-kNN ID embeddings for new items, built from the well-exposed known items."""

    def __init__(
        self,
        item_ids: np.ndarray,
        unit_content: np.ndarray,
        id_embeddings: np.ndarray,
        default: np.ndarray,
        k: int,
        min_similarity: float,
    ) -> None:
        self.item_ids = item_ids  # [n] ids of the eligible (well-exposed) known items
        self.unit_content = unit_content  # [n, d]
        self.id_embeddings = id_embeddings  # [n, e]
        self.default = default  # [e]
        self.k = k
        self.min_similarity = min_similarity

    @classmethod
    def fit(
        cls,
        item_ids: np.ndarray,
        content: np.ndarray,
        exposures: np.ndarray,
        id_embeddings: np.ndarray,
        default: np.ndarray,
        k: int = 10,
        min_exposures: int = 100,
        min_similarity: float = 0.0,
    ) -> NewItemEmbeddings:
        """Keep the known items with ``exposures >= min_exposures`` as the neighbour pool.

        Args:
            item_ids: [n] ids of the known items.
            content: [n, d] their content vectors.
            exposures: [n] their exposure counts.
            id_embeddings: [n, e] their rows of the model's item embedding table.
            default: [e] the fallback row (row 0 of the table, the learned default embedding).
            k: neighbours averaged per new item.
            min_exposures: exposures an item needs to be a neighbour.
            min_similarity: a neighbour needs cosine strictly above this (0: unrelated or empty content never
                qualifies).
        """
        content = np.asarray(content, dtype=np.float64)
        id_embeddings = np.asarray(id_embeddings, dtype=np.float64)
        exposures = np.asarray(exposures)
        n = len(content)
        if id_embeddings.shape[0] != n or exposures.shape != (n,) or len(item_ids) != n:
            raise ValueError(f"item_ids, content, exposures and id_embeddings must have {n} rows")
        default = np.asarray(default, dtype=np.float64)
        if default.shape != id_embeddings.shape[1:]:
            raise ValueError(f"default row has shape {default.shape}, the table rows {id_embeddings.shape[1:]}")
        if k < 1:
            raise ValueError("k must be at least 1")
        keep = exposures >= min_exposures
        return cls(np.asarray(item_ids)[keep], _unit_rows(content[keep]), id_embeddings[keep], default, k,
                   min_similarity)  # fmt: skip

    def _neighbours(self, content: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices [m, k'] of the top-k' pool items by cosine, and whether each qualifies [m, k']."""
        query = _unit_rows(np.asarray(content, dtype=np.float64).reshape(len(content), -1))
        sims = query @ self.unit_content.T  # [m, n]
        k = min(self.k, sims.shape[1])
        if k == 0:
            empty = np.zeros((len(query), 0), dtype=np.int64)
            return empty, empty.astype(bool)
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # [m, k], unordered
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        top, top_sims = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_sims, order, axis=1)
        return top, top_sims > self.min_similarity

    def embed(self, content: np.ndarray) -> np.ndarray:
        """ID embeddings [m, e] for new items from their content [m, d]: mean over qualifying neighbours."""
        top, ok = self._neighbours(content)
        rows = self.id_embeddings[top] * ok[..., None]  # [m, k, e]
        count = ok.sum(axis=1, keepdims=True)  # [m, 1]
        mean = rows.sum(axis=1) / np.maximum(count, 1)
        return np.where(count > 0, mean, self.default[None, :])

    def neighbour_ids(self, content: np.ndarray) -> list[list]:
        """The ids whose embeddings :meth:`embed` averages, most similar first (empty: the default row)."""
        top, ok = self._neighbours(content)
        return [list(self.item_ids[row[mask]]) for row, mask in zip(top, ok, strict=True)]


def extend_table(table: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, int]:
    """A copy of an embedding table with ``rows`` appended; new item ``i`` lives at ``first_new_index + i``.

    The model's own table is left untouched, so a request in flight never sees a half-written table.
    """
    rows_t = torch.as_tensor(np.asarray(rows), dtype=table.dtype, device=table.device).reshape(-1, table.shape[1])
    return torch.cat([table.detach(), rows_t], dim=0), table.shape[0]
