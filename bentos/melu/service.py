"""MeLU adaptation service: a new user's few ratings in, predicted ratings of candidates out.

* ``POST /adapt``: the user's profile (optional fields), the support set (item ids with ratings 1-5) and the
  candidate item ids; MeLU takes its local steps on the decision layers from the support set, then predicts.
  Unknown items are reported back and left out; an empty support set predicts with the global (meta) weights.
* ``POST /evidence``: items to ask a brand-new user to rate first (MeLU's evidence candidates, computed when
  the version was imported), excluding any already rated.
* Health: BentoML's ``/livez`` and ``/readyz``. With ``COLDSTART_API_TOKEN`` set, every API call needs
  ``Authorization: Bearer <token>`` (401 otherwise).
"""

from __future__ import annotations

import json
from pathlib import Path

import bentoml
from pydantic import BaseModel, Field

from pipelines.serving.auth import TokenMiddleware
from pipelines.settings import get_settings

# Read at import, at build time and again when served (``COLDSTART_BENTO_MODEL``; the build pins it in the bento).
MODEL_TAG = get_settings().bento_model or "coldstart_melu:latest"


class Rated(BaseModel):
    item_id: int
    rating: float = Field(ge=1, le=5)


class Profile(BaseModel):
    gender: str | None = None
    age: int | None = Field(None, ge=0, le=120)
    occupation: str | None = None
    region: str | None = None


class AdaptResponse(BaseModel):
    model_version: str
    predictions: list[dict]
    unknown_items: list[int]


class EvidenceResponse(BaseModel):
    model_version: str
    items: list[dict]


@bentoml.service(name="coldstart_melu", traffic={"timeout": 30}, workers=1)
class MeLUService:
    bento_model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        import mlflow
        import pandas as pd
        import torch

        torch.set_num_threads(1)
        root = Path(self.bento_model.path)
        self.wrapper = mlflow.pyfunc.load_model(str(root / "mlflow")).unwrap_python_model()
        self.items = pd.read_parquet(root / "items.parquet").set_index("item_id")
        evidence = root / "evidence.json"
        self.evidence_items = json.loads(evidence.read_text()) if evidence.is_file() else []
        self.version = self.bento_model.info.labels.get("mlflow_version", "?")

    def _rows(self, profile: Profile, item_ids: list[int], ratings: list[float] | None = None):
        import numpy as np
        import pandas as pd

        rows = self.items.loc[item_ids].reset_index()
        for field, value in profile.model_dump().items():
            rows[field] = value if value is not None else "unknown"
        rows["content_vector"] = rows["content_vector"].map(lambda v: np.asarray(v, dtype=np.float32))
        if ratings is not None:
            rows["rating"] = ratings
        return self.wrapper.encoder.transform(pd.DataFrame(rows))

    @bentoml.api
    def adapt(
        self,
        support: list[Rated] = Field(default_factory=list, max_length=200),  # noqa: B008
        candidates: list[int] = Field(min_length=1, max_length=1000),  # noqa: B008
        profile: Profile = Field(default_factory=Profile),  # noqa: B008
    ) -> AdaptResponse:
        """Adapt on ``support``, predict ratings of ``candidates`` (best first)."""
        import torch

        known = set(self.items.index)
        unknown = sorted(
            {i for i in candidates if i not in known} | {r.item_id for r in support if r.item_id not in known}
        )
        rated = [r for r in support if r.item_id in known]
        wanted = [i for i in dict.fromkeys(candidates) if i in known]
        if not wanted:
            return AdaptResponse(model_version=self.version, predictions=[], unknown_items=unknown)
        query = self._rows(profile, wanted)
        if rated:
            batch = self._rows(profile, [r.item_id for r in rated], [r.rating for r in rated])
            scores = self.wrapper.model.predict(batch, query)
        else:
            with torch.no_grad():
                scores = self.wrapper.model(query)
        ranked = sorted(zip(wanted, scores.reshape(-1).tolist(), strict=True), key=lambda p: -p[1])
        predictions = [{"item_id": int(i), "rating": float(s)} for i, s in ranked]
        return AdaptResponse(model_version=self.version, predictions=predictions, unknown_items=unknown)

    @bentoml.api
    def evidence(
        self,
        k: int = Field(10, ge=1, le=50),
        exclude: list[int] = Field(default_factory=list, max_length=1000),  # noqa: B008
    ) -> EvidenceResponse:
        """The ``k`` best evidence candidates (discriminative × popular), minus ``exclude``."""
        skip = set(exclude)
        items = [e for e in self.evidence_items if e["item_id"] not in skip][:k]
        return EvidenceResponse(model_version=self.version, items=items)


MeLUService.add_asgi_middleware(TokenMiddleware)
