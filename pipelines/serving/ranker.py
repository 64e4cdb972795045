"""The ranker behind the BentoML service, usable without BentoML: features → multi-task scores → policies.

``RankerCore.rank`` never fails on unknown ids: an unknown user takes the new-user path (no features, the
default user embedding, POSO's "new" code), an unknown item the default item embedding, or, with the
``content_knn`` policy and a known content vector, the mean ID embedding of its most content-similar
well-exposed items. Scores fuse pCTR, pCVR and pCTCVR, then the boost / guaranteed-exposure policies touch new
items; each ranked item says which policies touched it. ``RankerCore.score_frame`` is the same encoding, new-item
embedding and forward pass over a frame of many users × items, in chunks: what offline evaluation and the simulated
platform feed score with, so what they measure is what ``rank`` serves.

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
TASKS = ("p_ctr", "p_cvr", "p_ctcvr")
FLAGS = ("item_oov", "item_knn_row", "item_default_row", "user_oov", "new_user_path")  # how score_frame scored a row
CHUNK = 65_536  # rows encoded and scored at once by score_frame: bounds the tensors' memory


class RankerCore:
    """Scores candidates for a user with a registered multi-task ranker and the serving policies."""

    def __init__(self, wrapper, features=None, items: pd.DataFrame | None = None, config: PolicyConfig | None = None,
                 version: str = "?", nearline: NearlineState | None = None, tower=None) -> None:  # fmt: skip
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
            tower: the champion content tower (:class:`~pipelines.serving.content_vectors.TowerEmbedder`);
                with ``knn_vectors="tower"`` it embeds both the known items (from ``items``' ``category``,
                ``keywords``, ``content_vector``) and each new item's query, so both are in its space. None:
                the raw content vectors (``knn_vectors`` says which space the core uses).
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
        # Known items and new items' queries must be in one space: the tower's when there is one, else raw.
        self.tower = tower if self.config.knn_vectors == "tower" else None
        self.knn_vectors = "tower" if self.tower is not None else "raw"
        if items is not None and len(items) and self._tables and self.config.new_item_embedding == "content_knn":
            self._fit_knn(items)

    def _fit_knn(self, items: pd.DataFrame) -> None:
        """The content-kNN index of each item table over the known items of the model's vocabulary."""
        vocab = self.encoder.vocab["item_id"]
        known = items[items["item_id"].astype(str).isin(vocab)].reset_index(drop=True)
        if not len(known):
            return
        index = np.array([vocab[str(i)] for i in known["item_id"]])
        vectors = self._vectors(known)
        self.knn = [
            NewItemEmbeddings.fit(
                known["item_id"].to_numpy(), vectors, known["exposures_total"].to_numpy(float),
                table.weight.detach().numpy()[index], k=self.config.knn_k, min_exposures=self.config.knn_min_exposures,
                default=table.weight.detach().numpy()[0], min_similarity=self.config.knn_min_similarity,
            )
            for table in self._tables
        ]  # fmt: skip

    def _vectors(self, rows: pd.DataFrame) -> np.ndarray:
        """[n, d] vectors of ``rows`` in the core's kNN space: the tower's embedding, or the raw content vector."""
        if self.tower is not None:
            return self.tower.embed(rows)[0]
        return np.stack([np.asarray(v, dtype=np.float32) for v in rows["content_vector"]])

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

    def _new_item_rows(self, frame: pd.DataFrame, sparse: torch.Tensor) -> np.ndarray:
        """Point unknown items with a content vector at content-similar embeddings; returns which rows were.

        Each new item gets one appended row (its first row's content vector), the first time it is seen, while
        fewer than ``max_new_item_rows`` were appended; later rows of the item reuse it. The rows of one call
        are appended in one copy of each table, in order of first appearance (as one at a time would).
        """
        touched = np.zeros(len(frame), dtype=bool)
        if self.knn is None or "content_vector" not in frame:
            return touched
        rows = np.flatnonzero(sparse[:, ITEM_FIELD].numpy() == 0)  # out of vocabulary (or no id)
        ids = frame["item_id"].to_numpy()[rows]
        vectors = frame["content_vector"].to_numpy()[rows]
        with_vector: dict[int, int] = {}  # item id -> the frame row of its first content, in order of appearance
        for row, item_id, vector in zip(rows.tolist(), ids.tolist(), vectors.tolist(), strict=True):
            if pd.isna(item_id) or not isinstance(vector, list | np.ndarray) or len(vector) == 0:
                continue
            with_vector.setdefault(int(item_id), row)
        if not with_vector:
            return touched
        with self._lock:
            room = max(0, self.config.max_new_item_rows - len(self._extra))
            fresh = [i for i in with_vector if i not in self._extra][:room]
            if fresh:
                content = self._vectors(frame.iloc[[with_vector[i] for i in fresh]])
                for table, knn in zip(self._tables, self.knn, strict=True):
                    grown, first = extend_table(table.weight.data, knn.embed(content))
                    table.weight = torch.nn.Parameter(grown, requires_grad=False)
                    table.num_embeddings = grown.shape[0]
                self._extra.update({item_id: first + j for j, item_id in enumerate(fresh)})
            index = {i: self._extra[i] for i in with_vector if i in self._extra}
        for row, item_id in zip(rows.tolist(), ids.tolist(), strict=True):
            if not pd.isna(item_id) and int(item_id) in index:
                sparse[row, ITEM_FIELD] = index[int(item_id)]
                touched[row] = True
        return touched

    def score_frame(self, frame: pd.DataFrame, chunk: int = CHUNK) -> pd.DataFrame:
        """Score every row of ``frame`` (many users × items) the way :meth:`rank` scores a request's candidates.

        The rows carry the features ``rank`` would assemble (user and item features, ``item_id``, ``user_id``,
        ``content_vector``); a user the feature store does not know is expected with no user features and
        ``is_new_user`` = 1, as ``rank`` builds it. Encoding, content-kNN rows for new items and the forward pass
        run ``chunk`` rows at a time. Policies that act on the fused score (boost, guaranteed exposure) are
        not applied: the probabilities are the model's.

        Returns:
            One row per row of ``frame`` (a fresh RangeIndex): ``p_ctr``, ``p_cvr``, ``p_ctcvr`` (float64) and
            how the row was scored: ``item_oov`` (the item is out of the model's vocabulary), ``item_knn_row``
            (it was scored with a content-kNN row), ``item_default_row`` (out of vocabulary, on the learned
            default row 0), ``user_oov`` (the user is out of the vocabulary: default user row 0) and
            ``new_user_path`` (the new-user code, ``is_new_user``, was on).
        """
        parts = []
        for start in range(0, len(frame), chunk):
            part = frame.iloc[start : start + chunk]
            batch = self.encoder.transform(part)
            oov = batch["sparse"][:, ITEM_FIELD].numpy() == 0  # before _new_item_rows re-points them
            knn = self._new_item_rows(part, batch["sparse"])
            with torch.no_grad():
                out = self.model(batch)
            columns = {k: out[k].numpy().astype(np.float64) for k in TASKS}
            user_oov, new_user = batch["user"].numpy() == 0, batch["pc"][:, 1].numpy() > 0  # pc: (views, new, days)
            columns |= {"item_oov": oov, "item_knn_row": knn, "item_default_row": oov & ~knn, "user_oov": user_oov,
                        "new_user_path": new_user}  # fmt: skip
            parts.append(pd.DataFrame(columns))
        if not parts:
            return pd.DataFrame({k: np.zeros(0, float) for k in TASKS} | {k: np.zeros(0, bool) for k in FLAGS})
        return pd.concat(parts, ignore_index=True)

    def rank(self, user_id: int, candidates: list[int], user_features: dict | None = None,
             item_features: dict[int, dict] | None = None, now: dt.datetime | None = None,
             k: int | None = None) -> dict[str, Any]:  # fmt: skip
        """Candidates ranked best first, with scores, the three probabilities and the policies applied."""
        now = now or dt.datetime.now(dt.UTC)
        candidates = list(dict.fromkeys(int(c) for c in candidates))
        frame, known_user = self._frame(int(user_id), candidates, user_features, item_features)
        scored = self.score_frame(frame)
        p_ctr, p_cvr, p_ctcvr = (scored[k].to_numpy() for k in TASKS)
        embedded = scored["item_knn_row"].to_numpy()
        base = fuse(p_ctr, p_cvr, p_ctcvr, self.config)
        age = _age_hours(frame, now)
        unknown = scored["item_oov"].to_numpy()
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
        return {"user_id": int(user_id), "new_user": not known_user, "model_version": self.version,
                "knn_vectors": self.knn_vectors, "items": items}  # fmt: skip


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
