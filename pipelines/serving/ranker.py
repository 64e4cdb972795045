"""The ranker behind the BentoML service, usable without BentoML: features → multi-task scores → policies.

``RankerCore.rank`` never fails on unknown ids: an unknown user takes the new-user path (no features, the
default user embedding, POSO's "new" code), an unknown item the default item embedding, or, with the
``content_knn`` policy and a known content vector, the mean ID embedding of its most content-similar
well-exposed items. Scores fuse pCTR, pCVR and pCTCVR, then the boost / guaranteed-exposure policies touch new
items; each ranked item says which policies touched it.

Guaranteed exposure runs in one of two modes. Given a :class:`~pipelines.serving.nearline.NearlineState`, the
core reads the state every worker shares (:class:`~pipelines.serving.nearline.SharedExposureController`): items,
targets and exposures come from the logs through the near-line writer, and the core's own answers count for
nothing. Without one, an in-process :class:`ExposureController` registers new items from requests and counts the
top ``slate_size`` of each answer as shown (a single process, simulations, benchmarks).
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipelines.models.layers import EmbeddingLayer
from pipelines.serving.exposure import ExposureConfig, author_percentiles
from pipelines.serving.nearline import NearlineState, SharedExposureController
from pipelines.serving.policies import (
    ExposureController,
    NewItemEmbeddings,
    PolicyConfig,
    apply_policies,
    extend_table,
    fuse,
)
from pipelines.training.dataset import SPARSE

ITEM_FIELD = SPARSE.index("item_id")


class RankerCore:
    """Scores candidates for a user with a registered multi-task ranker and the serving policies."""

    def __init__(self, wrapper, features=None, items: pd.DataFrame | None = None, config: PolicyConfig | None = None,
                 version: str = "?", nearline: NearlineState | None = None) -> None:  # fmt: skip
        """
        Args:
            wrapper: the loaded pyfunc's python model (``RankerModel``: ``encoder`` and torch ``model``).
            features: a :class:`~pipelines.serving.features.FeastFeatures` (or anything with ``user`` and
                ``items``); without it every feature must come in the request.
            items: known items' ``item_id``, ``content_vector``, ``exposures_total`` (for ``content_knn``).
            config: the policies; defaults to :class:`PolicyConfig`.
            version: the model version the answers name.
            nearline: the shared near-line state to pace new items from (read only); None: an in-process
                controller that counts this core's own answers.
        """
        self.encoder, self.model = wrapper.encoder, wrapper.model
        self.model.eval()
        self.features = features
        self.config = config or PolicyConfig()
        self.version = version
        self.controller: ExposureController | SharedExposureController = (
            ExposureController(self.config) if nearline is None else SharedExposureController(nearline, self.config)
        )
        self._tables = [m.tables[ITEM_FIELD] for m in self.model.modules()
                        if isinstance(m, EmbeddingLayer) and len(m.tables) == len(SPARSE)]  # fmt: skip
        self._extra: dict[int, int] = {}
        self._lock = threading.Lock()
        self.knn = None
        vocab = self.encoder.vocab["item_id"]
        if items is not None and len(items) and self._tables and self.config.new_item_embedding == "content_knn":
            known = items[items["item_id"].astype(str).isin(vocab)]
            if len(known):
                index = np.array([vocab[str(i)] for i in known["item_id"]])
                self.knn = [
                    NewItemEmbeddings.fit(
                        known["item_id"].to_numpy(), np.stack(known["content_vector"].map(np.asarray)),
                        known["exposures_total"].to_numpy(float), table.weight.detach().numpy()[index],
                        k=self.config.knn_k, min_exposures=self.config.knn_min_exposures,
                        default=table.weight.detach().numpy()[0],
                    )
                    for table in self._tables
                ]  # fmt: skip

    def _frame(self, user_id: int, candidates: list[int], user_features: dict | None,
               item_features: dict[int, dict] | None) -> tuple[pd.DataFrame, bool]:  # fmt: skip
        if user_features is not None:
            user, known = dict(user_features), True
        elif self.features is not None:
            user, known = self.features.user(user_id)
        else:
            user, known = {}, False
        items = self.features.items(candidates) if self.features is not None else pd.DataFrame({"item_id": candidates})
        if item_features:
            overrides = pd.DataFrame([{"item_id": i, **f} for i, f in item_features.items()])
            items = items.drop(columns=[c for c in overrides if c != "item_id" and c in items]).merge(
                overrides, on="item_id", how="left") if len(items) else overrides  # fmt: skip
        n = len(items)
        user = {**user, "user_id": user_id, **({} if known else {"is_new_user": 1})}
        columns = {c: items[c].to_numpy() for c in items.columns if c not in user}
        columns |= {k: [v] * n if isinstance(v, list | np.ndarray) else np.repeat(v, n) for k, v in user.items()}
        return pd.DataFrame(columns), known  # one constructor call: column-by-column assignment costs ~10 ms

    def _new_item_rows(self, frame: pd.DataFrame, sparse: torch.Tensor) -> list[bool]:
        """Point unknown items with a content vector at content-similar embeddings; returns which were."""
        vocab = self.encoder.vocab["item_id"]
        touched = [False] * len(frame)
        if self.knn is None or "content_vector" not in frame:
            return touched
        for row, (item_id, vector) in enumerate(zip(frame["item_id"], frame["content_vector"], strict=True)):
            if str(item_id) in vocab or not isinstance(vector, list | np.ndarray) or len(vector) == 0:
                continue
            with self._lock:
                index = self._extra.get(int(item_id))
                if index is None and len(self._extra) < self.config.max_new_item_rows:
                    content = np.asarray(vector, dtype=np.float32)[None, :]
                    for table, knn in zip(self._tables, self.knn, strict=True):
                        grown, index = extend_table(table.weight.data, knn.embed(content))
                        table.weight = torch.nn.Parameter(grown, requires_grad=False)
                        table.num_embeddings = grown.shape[0]
                    self._extra[int(item_id)] = index
            if index is not None:
                sparse[row, ITEM_FIELD] = index
                touched[row] = True
        return touched

    def rank(self, user_id: int, candidates: list[int], user_features: dict | None = None,
             item_features: dict[int, dict] | None = None, now: dt.datetime | None = None,
             k: int | None = None) -> dict[str, Any]:  # fmt: skip
        """Candidates ranked best first, with scores, the three probabilities and the policies applied."""
        now = now or dt.datetime.now(dt.UTC)
        candidates = list(dict.fromkeys(int(c) for c in candidates))
        frame, known_user = self._frame(int(user_id), candidates, user_features, item_features)
        batch = self.encoder.transform(frame)
        embedded = self._new_item_rows(frame, batch["sparse"])
        with torch.no_grad():
            out = self.model(batch)
        p_ctr, p_cvr, p_ctcvr = (out[k].numpy().astype(np.float64) for k in ("p_ctr", "p_cvr", "p_ctcvr"))
        base = fuse(p_ctr, p_cvr, p_ctcvr, self.config)
        age = _age_hours(frame, now)
        vocab = self.encoder.vocab["item_id"]
        unknown = np.array([str(i) not in vocab for i in candidates])
        local = isinstance(self.controller, ExposureController)  # else near-line: registered and counted from logs
        authors = _author_scores(frame, self.config.exposure) if local else None
        scores, touched = apply_policies(base, np.asarray(candidates), age, self.controller, now, self.config,
                                         quality=p_ctr if local else None, author_score=authors)  # fmt: skip
        order = np.argsort(-scores, kind="stable")[: k or len(candidates)]
        if local:
            self.controller.record(np.asarray([candidates[i] for i in order[: self.config.slate_size]]), now)
        items = []
        for i in order:
            policies = list(touched[i])
            if unknown[i]:
                policies.insert(0, "new_item_embedding" if embedded[i] else "default_item_embedding")
            items.append({"item_id": candidates[i], "score": float(scores[i]), "p_ctr": float(p_ctr[i]),
                          "p_cvr": float(p_cvr[i]), "p_ctcvr": float(p_ctcvr[i]), "policies": policies})  # fmt: skip
        return {"user_id": int(user_id), "new_user": not known_user, "model_version": self.version, "items": items}


def _author_scores(frame: pd.DataFrame, cfg: ExposureConfig) -> np.ndarray | None:
    """Author score per candidate for the in-process controller: the percentile of the author's smoothed CTR
    (Feast's ``author_stats_fv``) among the candidates' authors; ``author_default_score`` without history."""
    if "author_ctr_smoothed" not in frame or "author_id" not in frame:
        return None
    authors = pd.to_numeric(frame["author_id"], errors="coerce").to_numpy(dtype=float)
    ctr = pd.to_numeric(frame["author_ctr_smoothed"], errors="coerce").to_numpy(dtype=float)
    known = np.isfinite(authors) & np.isfinite(ctr)
    scores = author_percentiles(dict(zip(authors[known].astype(np.int64).tolist(), ctr[known].tolist(), strict=True)))
    return np.array([scores.get(int(a), cfg.author_default_score) if np.isfinite(a) else cfg.author_default_score
                     for a in authors])  # fmt: skip


def _age_hours(frame: pd.DataFrame, now: dt.datetime) -> np.ndarray:
    """Hours since publishing: from the content row's timestamp, else the stats snapshot; unknown = NaN (no
    age-based policy applies to an item whose publication time is unknown)."""
    age = np.full(len(frame), np.nan)
    if "publish_time" in frame:
        published = pd.to_datetime(frame["publish_time"], utc=True, errors="coerce")
        age = ((pd.Timestamp(now) - published).dt.total_seconds() / 3600).to_numpy(dtype=float)
    if "age_hours" in frame:
        stats = pd.to_numeric(frame["age_hours"], errors="coerce").to_numpy(dtype=float)
        age = np.where(np.isnan(age), stats, age)
    return np.where(np.isnan(age), np.nan, np.clip(age, 0, None))
