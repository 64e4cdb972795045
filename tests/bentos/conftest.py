"""Registered models imported into a BentoML store for the service tests (built once per session).

BentoML reads ``BENTOML_HOME`` when it is first imported, so it is set here, before any test imports it, to
the store the fixtures import into (``<home>/bentoml``, the layout ``pipelines.serving.bento`` uses).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

HOME = Path(tempfile.mkdtemp(prefix="coldstart-bentos-")) / "home"
os.environ["BENTOML_HOME"] = str(HOME / "bentoml")
os.environ["BENTOML_DO_NOT_TRACK"] = "true"


@pytest.fixture(scope="session")
def bento_settings():
    from pipelines.settings import get_settings

    settings = get_settings(home=HOME)
    settings.ensure_home()
    return settings


@pytest.fixture(scope="session")
def ranker_tag(bento_settings) -> str:
    """A small ESMM trained on a synthetic frame, registered in MLflow and imported into BentoML."""
    from pipelines.serving.bento import import_model
    from pipelines.training.api import train_model

    from ..model.test_training import synthetic_frame

    # min_count_item 1: every item of the small frame has its own row (the golden ranking's items are known).
    train = {"epochs": 2, "batch_size": 256, "seed": 3, "min_count_item": 1}
    result = train_model(bento_settings, "esmm", synthetic_frame(4000, seed=1), {"tower": [16]}, train,
                         {"dataset": "synthetic"})  # fmt: skip
    return import_model(bento_settings, "esmm", result["version"])


@pytest.fixture(scope="session")
def melu_tag(bento_settings) -> str:
    """A small MeLU meta-trained on a few ML-1M tasks, registered and imported into BentoML."""
    from pipelines.data.movielens import ingest_movielens
    from pipelines.models.melu import MeLUConfig
    from pipelines.serving.bento import import_model
    from pipelines.training.melu import train_melu

    ingest_movielens(bento_settings.data_dir)
    cfg = MeLUConfig(embed_dim=8, hidden=[16, 16], local_lr=5e-3, meta_lr=1e-3, tasks_per_batch=16)
    result = train_melu(bento_settings, cfg, epochs=1, max_tasks=64)
    return import_model(bento_settings, "melu", result["version"])
