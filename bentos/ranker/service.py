"""Ranker service: candidates for a user, ranked by the promoted multi-task model with cold-start policies.

``POST /rank`` with ``user_id`` and ``candidates`` (item ids, 1-1000); features come from the Feast online store
of this profile, and any given in the request (``user_features``, ``item_features``) take precedence. The
answer lists the items best first with the fused score, pCTR, pCVR, pCTCVR and the policies that touched each
(``default_item_embedding`` / ``new_item_embedding``, ``boost``, ``guaranteed_exposure``); ``new_user`` says
whether the user took the new-user path. Unknown users and items are never an error. Bad input is a 400 with
the reason; with ``COLDSTART_API_TOKEN`` set, a request without ``Authorization: Bearer <token>`` is a 401.
Health: ``/livez``, ``/readyz``.

``POST /recommend`` with ``user_id`` (and ``k``, ``now``, ``user_features``, ``candidates``, ``channels``): recall
from every channel the bento packs (two-tower age pools, category/keyword, content clusters, look-alike; see
:mod:`pipelines.serving.recommend`) or only from the named ``channels`` (an unknown name is a 400 that lists the
valid ones), the user's seen items left out, then ranked as ``/rank`` does; each item lists
the ``channels`` that recalled it. Items published after the build are added near-line from the near-line state
and the online store. A bento built without a champion two-tower answers it with a 503.

Guaranteed exposure reads the near-line state every API worker shares (``COLDSTART_RANKER_NEARLINE``, on by
default): targets, exposures counted from logged impressions and gains come from the near-line writer, and the
service's own answers are not counted as exposures.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import bentoml
from bentoml.exceptions import BadInput, ServiceUnavailable
from pydantic import Field

from pipelines.serving.auth import TokenMiddleware
from pipelines.settings import get_settings

# Read at import, at build time and again when served (``COLDSTART_BENTO_MODEL``; the build pins it in the bento).
MODEL_TAG = get_settings().bento_model or "coldstart_esmm:latest"


@bentoml.service(name="coldstart_ranker", traffic={"timeout": 10}, workers=1)
class Ranker:
    bento_model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        import mlflow
        import pandas as pd
        import torch

        from pipelines.serving.policies import PolicyConfig
        from pipelines.serving.ranker import RankerCore
        from pipelines.serving.ranker_bento import packed_tower
        from pipelines.serving.recommend import Recommender

        settings = get_settings()
        torch.set_num_threads(settings.torch_threads)
        root = Path(self.bento_model.path)
        wrapper = mlflow.pyfunc.load_model(str(root / "mlflow")).unwrap_python_model()
        items = pd.read_parquet(root / "items.parquet") if (root / "items.parquet").is_file() else None
        features = None
        if settings.ranker_features == "feast":
            from pipelines.serving.features import FeastFeatures

            features = FeastFeatures(settings)
        config = PolicyConfig(**settings.ranker_policies)
        nearline = None
        if settings.ranker_nearline:
            from pipelines.serving.nearline import NearlineState

            nearline = NearlineState.open(settings, "sim", config.exposure)
        version = self.bento_model.info.labels.get("mlflow_version", "?")
        # The champion content tower packed beside the model: known and new items' kNN vectors in its space.
        tower = packed_tower(root)
        self.core = RankerCore(wrapper, features, items, config, version, nearline, tower=tower)
        # /recommend: the two-tower and recall indexes packed beside the model (None when none was champion).
        self.recommender = Recommender.load(root, self.core, features, nearline, tower)

    @bentoml.api
    def rank(
        self,
        user_id: int,
        candidates: list[int] = Field(min_length=1, max_length=1000),  # noqa: B008
        user_features: dict | None = None,
        item_features: dict[int, dict] | None = None,
        now: dt.datetime | None = None,
        k: int | None = Field(None, ge=1, le=1000),
    ) -> dict:
        """Rank ``candidates`` for ``user_id`` (top ``k``, default all)."""
        return self.core.rank(user_id, candidates, user_features, item_features, now, k)

    @bentoml.api
    def recommend(
        self,
        user_id: int,
        k: int = Field(20, ge=1, le=500),
        now: dt.datetime | None = None,
        user_features: dict | None = None,
        candidates: int = Field(200, ge=1, le=1000),
        channels: list[str] | None = Field(None, min_length=1),  # noqa: B008
    ) -> dict:
        """Top ``k`` items for ``user_id``: recall ``candidates`` from every channel (or only from ``channels``),
        rank them with the model and policies; each item lists the ``channels`` that recalled it. 400 for an
        unknown channel; 503 when the bento packs no retrieval."""
        from pipelines.serving.recommend import ChannelError

        if self.recommender is None:
            raise ServiceUnavailable("this bento packs no retrieval model (no two-tower version was champion)")
        try:
            return self.recommender.recommend(user_id, k, now, user_features, candidates, channels)
        except ChannelError as exc:
            raise BadInput(str(exc)) from exc


Ranker.add_asgi_middleware(TokenMiddleware)
