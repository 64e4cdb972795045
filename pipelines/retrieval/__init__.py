"""Candidate retrieval: which items a user's request starts from, before ranking.

``ann`` is the approximate nearest-neighbour index over unit item vectors (usearch HNSW, inner product); ``pools``
keeps the same vectors in several indexes by item age (1 h, 6 h, 24 h, 30 d) so new items get their own top-k
(MODELS.md §8). Other recall channels live in sibling modules.
"""
