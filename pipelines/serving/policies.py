"""Cold-start policies the ranker applies at serving time, and the fusion of its task scores into one.

A request goes: fuse the model's pCTR / pCVR / pCTCVR into one score (:func:`fuse`), then
:func:`apply_policies` multiplies in the new-item boosts and says which policy touched which candidate:

* ``new_item_embedding``: the item was out of the model's vocabulary and scored with a content-kNN ID
  embedding (:mod:`pipelines.serving.embeddings`); the policy acts before scoring, it is only labelled here;
* ``boost``: a fixed multiplier that fades with the item's age (:func:`age_boost`);
* ``guaranteed_exposure``: the feedback boost that paces each new item to its exposure target
  (:mod:`pipelines.serving.exposure`), from an in-process :class:`ExposureController` or from the near-line state
  every worker shares (:class:`~pipelines.serving.nearline.SharedExposureController`).

Boosts multiply the score, so the fused score must be positive and scale-free: a 2x boost should mean the same
for a category with CTRs around 1% as for one around 10%. That is why fusion is a weighted geometric product.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Hashable, Sequence
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipelines.serving.embeddings import NewItemEmbeddings, extend_table
from pipelines.serving.exposure import (
    HOUR,
    ExposureConfig,
    ExposureController,
    exposure_target,
    target_curve,
    to_seconds,
)

__all__ = [
    "ExposureConfig",
    "ExposureController",
    "FusionWeights",
    "NewItemEmbeddings",
    "Pacer",
    "PolicyConfig",
    "age_boost",
    "apply_policies",
    "exposure_target",
    "extend_table",
    "fuse",
    "peer_percentile",
    "target_curve",
]

POLICIES = ("new_item_embedding", "boost", "guaranteed_exposure")
# Every subset of POLICIES, indexed by its bit mask (bit i set: POLICIES[i] touched the candidate).
_LABEL_SETS = tuple(tuple(name for i, name in enumerate(POLICIES) if code >> i & 1) for code in range(8))
EPS = 1e-7  # floor on probabilities before the log, so a zero weight on a zero probability gives a factor 1


class FusionWeights(BaseModel):
    """Exponents of ``score = p_ctr^ctr · p_cvr^cvr · p_ctcvr^ctcvr``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ctr: float = Field(0.5, ge=0)
    cvr: float = Field(0.0, ge=0)
    ctcvr: float = Field(0.5, ge=0)


class PolicyConfig(BaseModel):
    """Every knob of the serving-time cold-start policies. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    new_item_embedding: Literal["default", "content_knn"] = "content_knn"
    knn_vectors: Literal["raw", "tower"] = Field(
        "tower", description="The space content neighbours are found in: the champion content tower's vectors "
        "(learned from co-engagement), or the raw content vectors; the raw ones when no tower is loaded.",
    )  # fmt: skip
    knn_k: int = Field(10, ge=1, description="Content neighbours averaged into a new item's ID embedding.")
    knn_min_exposures: int = Field(100, ge=0, description="Exposures a known item needs to be a neighbour.")
    knn_min_similarity: float = Field(0.0, ge=-1, le=1, description="A neighbour needs cosine above this.")
    boost_strength: float = Field(0.0, ge=0, description="Fixed boost at age 0 is 1 + strength (0: off).")
    boost_max_age_hours: float = Field(24.0, gt=0, description="The fixed boost fades to 1 at this age.")
    slate_size: int = Field(10, ge=1, description="Ranked items actually shown, hence recorded as exposures.")
    max_new_item_rows: int = Field(
        100_000, ge=0, description="Content-kNN rows the service may append to the item table; later new items "
        "get the default row until the next model load.",
    )  # fmt: skip
    exposure: ExposureConfig = Field(default_factory=ExposureConfig)
    fusion: FusionWeights = Field(default_factory=FusionWeights)


class Pacer(Protocol):
    """What :func:`apply_policies` needs of a guaranteed-exposure controller (in-process or near-line)."""

    def boost(self, item_ids: Sequence[Hashable], now: float | dt.datetime) -> np.ndarray: ...


def fuse(
    p_ctr: np.ndarray, p_cvr: np.ndarray, p_ctcvr: np.ndarray, weights: FusionWeights | PolicyConfig
) -> np.ndarray:
    """One ranking score from the task probabilities: ``p_ctr^a · p_cvr^b · p_ctcvr^c`` (weighted geometric).

    The default ``a = c = 0.5, b = 0`` is the geometric mean of the two tasks supervised on every impression
    (pCVR is only supervised on clicks, and pCTCVR = pCTR·pCVR already carries it). ``weights`` may be the
    whole :class:`PolicyConfig`, whose ``fusion`` is used.
    """
    if isinstance(weights, PolicyConfig):
        weights = weights.fusion
    logs = (
        weights.ctr * np.log(np.clip(np.asarray(p_ctr, float), EPS, 1.0))
        + weights.cvr * np.log(np.clip(np.asarray(p_cvr, float), EPS, 1.0))
        + weights.ctcvr * np.log(np.clip(np.asarray(p_ctcvr, float), EPS, 1.0))
    )
    return np.exp(logs)


def age_boost(age_hours: np.ndarray, cfg: PolicyConfig) -> np.ndarray:
    """Fixed boost ``1 + strength · max(0, 1 - age / max_age)``; 1 past ``max_age`` or for an unknown age (NaN)."""
    age = np.maximum(np.asarray(age_hours, float), 0.0)  # a publish time in the future counts as age 0
    boost = 1.0 + cfg.boost_strength * np.maximum(1.0 - age / cfg.boost_max_age_hours, 0.0)
    boost[np.isnan(boost)] = 1.0
    return boost


def peer_percentile(values: np.ndarray) -> np.ndarray:
    """Each value's percentile among ``values``, in (0, 1): ``(rank + 0.5) / n`` (ties broken by position)."""
    values = np.asarray(values, float)
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return (ranks + 0.5) / max(len(values), 1)


def apply_policies(
    scores: np.ndarray,
    item_ids: Sequence[Hashable],
    age_hours: np.ndarray,
    controller: Pacer | None,
    now: float | dt.datetime,
    cfg: PolicyConfig,
    *,
    out_of_vocab: np.ndarray | None = None,
    quality: np.ndarray | None = None,
    author_score: np.ndarray | None = None,
) -> tuple[np.ndarray, list[list[str]]]:
    """Multiply the boosts into the fused scores of one request's candidates.

    With ``quality`` given, candidates younger than ``exposure.window_hours`` that the controller does not know
    yet are registered, published ``age_hours`` before ``now``, with quality score = the percentile of their
    ``quality`` (pass pCTR) among this request's candidates and the given author score (0.5 when absent: an
    author with no history is average). A service whose items are registered near-line, from the logs, by the
    writer of :mod:`pipelines.serving.nearline` passes no ``quality``.

    Args:
        scores: [n] fused scores (:func:`fuse`), positive.
        item_ids: [n] candidate ids.
        age_hours: [n] hours since each item was published (NaN: unknown, no age boost, never registered).
        controller: the guaranteed-exposure controller (anything with ``boost``); required when
            ``cfg.exposure.enabled``; with ``quality`` it must be an :class:`ExposureController`.
        now: request time, POSIX seconds or a datetime.
        cfg: the policy config.
        out_of_vocab: [n] bool, the item was not in the model's vocabulary when scored; with the
            ``content_knn`` policy those are labelled ``new_item_embedding`` (left out: no such label).
        quality: [n] the candidates' quality proxy (pCTR), for registering new items.
        author_score: [n] author quality in [0, 1] (the author's smoothed-CTR percentile), for registering.

    Returns:
        The adjusted scores [n] and, per candidate, the policies that changed it, in the order
        ``new_item_embedding``, ``boost``, ``guaranteed_exposure``.
    """
    scores = np.asarray(scores, float)
    age = np.asarray(age_hours, float)
    n = len(scores)
    if not (len(item_ids) == n == len(age)) or (out_of_vocab is not None and len(out_of_vocab) != n):
        raise ValueError("scores, item_ids, age_hours and out_of_vocab must have the same length")
    embedded = np.zeros(n, bool)
    if out_of_vocab is not None and cfg.new_item_embedding == "content_knn":
        embedded = np.asarray(out_of_vocab, bool)
    boost = age_boost(age, cfg)
    paced = np.ones(n)
    if cfg.exposure.enabled:
        if controller is None:
            raise ValueError("guaranteed exposure is enabled but no controller was given")
        if quality is not None:
            if not isinstance(controller, ExposureController):
                raise ValueError("only an in-process ExposureController registers items from requests")
            _register_unseen(controller, item_ids, age, to_seconds(now), quality, author_score, cfg.exposure)
        paced = controller.boost(item_ids, now)
    codes = embedded * 1 + (boost > 1) * 2 + (paced > 1) * 4
    touched = [list(_LABEL_SETS[c]) for c in codes.tolist()]
    return scores * boost * paced, touched


def _register_unseen(
    controller: ExposureController,
    item_ids: Sequence[Hashable],
    age: np.ndarray,
    now: float,
    quality: np.ndarray,
    author_score: np.ndarray | None,
    cfg: ExposureConfig,
) -> None:
    young = np.flatnonzero(age < cfg.window_hours)  # NaN ages compare False
    unseen = [j for j in young.tolist() if item_ids[j] not in controller]
    if not unseen:
        return
    authors = np.full(len(age), 0.5) if author_score is None else np.asarray(author_score, float)
    controller.register([item_ids[j] for j in unseen], now - np.maximum(age[unseen], 0.0) * HOUR,
                        peer_percentile(quality)[unseen], authors[unseen])  # fmt: skip
