"""The content tower's training (MODELS.md §7): triplets from a window of the event log, the generic trainer, the
vectors of a whole catalog or of one new item at publish time, the pyfunc and its MLflow registration, and the
content family's ``train`` hook.

One MLflow run in ``coldstart_training`` logs the resolved config (model, triplets, trainer), the lineage
(dataset, window, data fingerprint) as ``lineage.*`` tags, per-epoch metrics and the model; the version is
registered as ``coldstart_content_tower`` with alias ``candidate``. The pyfunc maps rows of ``item_id``,
``category``, ``keywords``, ``content_vector`` to ``item_id``, ``vector`` (unit norm) and ``quality`` (the
predicted observed quality, log COEC): the same call embeds a catalog and a brand-new item.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from pipelines.catalog import TRAINING_EXPERIMENT, Model
from pipelines.catalog.content import FAMILY
from pipelines.data.contract import Store
from pipelines.models.content_tower import ContentSpec, ContentTower, ContentTowerConfig
from pipelines.settings import Settings, use_mlflow_experiment
from pipelines.training.config import TrainConfig, TrainRequest, request_train
from pipelines.training.content_data import (
    CONTENT_COLUMNS,
    ContentEncoder,
    TripletConfig,
    build_tower_data,
    read_window,
)
from pipelines.training.trainer import Callback, EarlyStopping, LogMetrics, Trainer

log = logging.getLogger(__name__)

NAME = "content_tower"
REGISTERED = Model(NAME, FAMILY).registered_name
EMBED_CHUNK = 65536  # items per forward pass when embedding a catalog


def _default_train() -> TrainConfig:
    # A window yields 10^3-10^5 triplets: more, smaller steps than the rankers' defaults (on the simulator, 10
    # epochs of 256 left same-topic recall@10 at 0.57 and the quality head unfitted; 30 of 128 reach 0.89). One
    # thread: a second only adds synchronisation to a model this small (20 ms a step on one, 120-700 on two).
    return TrainConfig(epochs=30, batch_size=128, lr=3e-3, patience=5, threads=1)


class ContentTowerTraining(BaseModel):
    """Everything a content tower run can be told. Unknown keys are rejected at every level."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ContentTowerConfig = Field(default_factory=ContentTowerConfig)
    triplets: TripletConfig = Field(default_factory=TripletConfig)
    train: TrainConfig = Field(default_factory=_default_train)

    @classmethod
    def from_request(cls, request: TrainRequest) -> ContentTowerTraining:
        """The tower's defaults, then the request's explicitly set trainer knobs, then ``overrides`` (which may
        hold ``model``, ``triplets`` and ``train``)."""
        train, overrides = request_train(_default_train(), request)
        return cls(**overrides, train=train)


@dataclass
class FittedTower:
    """A trained tower, its encoder, the per-epoch metrics and the data counts."""

    model: ContentTower
    encoder: ContentEncoder
    history: list[dict[str, float]]
    counts: dict[str, int]


def tower_metrics(out: dict[str, torch.Tensor], data: dict[str, torch.Tensor]) -> dict[str, float]:
    """Validation extras: share of (triplet, negative) ordered right, Spearman of the anchors' quality."""
    from scipy.stats import spearmanr

    vector = out["vector"]  # [T, S, d]
    pos = (vector[:, 0] * vector[:, 1]).sum(-1)  # [T]
    neg = (vector[:, :1] * vector[:, 2:]).sum(-1)  # [T, K]
    metrics = {"val_triplet_accuracy": float((pos.unsqueeze(1) > neg).float().mean())} if len(vector) else {}
    seen = data["quality_weight"][:, 0] > 0
    if int(seen.sum()) > 2:
        rho = spearmanr(out["quality"][seen, 0].numpy(), data["quality"][seen, 0].numpy()).statistic
        metrics["val_quality_spearman"] = float(np.nan_to_num(rho))
    return metrics


def fit_tower(
    items: pd.DataFrame, impressions: pd.DataFrame, cfg: ContentTowerTraining, callbacks: list[Callback] | None = None
) -> FittedTower:
    """Build the triplets of a window and train a tower on them (seeded: same inputs, same weights).

    Args:
        items: the catalog (``item_id``, ``category``, ``keywords``, ``content_vector``).
        impressions: the window's ``user_id``, ``item_id``, ``click``, ``position``.
        cfg: the run's config.
        callbacks: trainer callbacks after early stopping (e.g. logging to MLflow).
    """
    data = build_tower_data(items, impressions, cfg.triplets, cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    model = ContentTower(data.encoder.spec(), cfg.model)
    trainer = Trainer(model, cfg.train, [EarlyStopping(), *(callbacks or [])], tower_metrics)
    trainer.fit(data.train, data.val)
    model.eval()
    counts = data.counts | {"epochs": trainer.state.epoch, "best_epoch": trainer.state.best_epoch}
    return FittedTower(model, data.encoder, trainer.state.history, counts)


def embed_items(model: ContentTower, encoder: ContentEncoder, items: pd.DataFrame) -> pd.DataFrame:
    """``item_id``, ``vector`` (unit-norm float32 arrays) and ``quality`` of every item, from content alone: a
    whole catalog or one new item at publish time give each item the same vector."""
    model.eval()
    vectors, quality = [], []
    with torch.no_grad():
        for start in range(0, len(items), EMBED_CHUNK):
            x = encoder.transform(items.iloc[start : start + EMBED_CHUNK])
            v, q = model.encode(x["tokens"], x["content"])  # [n, d], [n]
            vectors.append(v.numpy())
            quality.append(q.numpy())
    v = np.concatenate(vectors) if vectors else np.zeros((0, model.cfg.dim), np.float32)
    q = np.concatenate(quality) if quality else np.zeros(0, np.float32)
    return pd.DataFrame({"item_id": items["item_id"].to_numpy(), "vector": list(v), "quality": q})


def nearest_items(query: np.ndarray, index: np.ndarray, k: int) -> np.ndarray:
    """[n, k] rows of ``index`` with the highest cosine to each row of ``query`` (unit vectors), best first."""
    scores = query @ index.T  # [n, m]
    k = min(k, index.shape[0])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


class ContentTowerModel(mlflow.pyfunc.PythonModel):
    """pyfunc: rows of ``item_id``, ``category``, ``keywords``, ``content_vector`` -> ``item_id``, ``vector``,
    ``quality``."""

    def load_context(self, context) -> None:
        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        self.encoder = ContentEncoder.from_dict(meta["encoder"])
        self.model = ContentTower(ContentSpec(**meta["spec"]), ContentTowerConfig(**meta["config"]))
        self.model.load_state_dict(torch.load(context.artifacts["weights"], weights_only=True))
        self.model.eval()

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return _plain(embed_items(self.model, self.encoder, model_input))


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Vectors as lists of Python floats (what MLflow's signature and JSON serving carry)."""
    return frame.assign(vector=[v.tolist() for v in frame["vector"]])


def log_and_register(fitted: FittedTower, example: pd.DataFrame, registered: str = REGISTERED) -> str:
    """Log the tower in the active run, register a new version of ``registered`` and alias it ``candidate``."""
    from mlflow.models import infer_signature

    from pipelines.training.registry import pip_requirements, plain_lists

    example = plain_lists(example[CONTENT_COLUMNS].reset_index(drop=True))
    output = _plain(embed_items(fitted.model, fitted.encoder, example))
    meta = {"encoder": fitted.encoder.to_dict(), "spec": fitted.encoder.spec().__dict__,
            "config": fitted.model.cfg.model_dump()}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.save(fitted.model.state_dict(), folder / "weights.pt")
        (folder / "meta.json").write_text(json.dumps(meta))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ContentTowerModel(),
            artifacts={"weights": str(folder / "weights.pt"), "meta": str(folder / "meta.json")},
            input_example=example,
            signature=infer_signature(example, output),
            registered_model_name=registered,
            pip_requirements=pip_requirements(),
        )
    version = str(info.registered_model_version)
    mlflow.MlflowClient().set_registered_model_alias(registered, "candidate", version)
    return version


def train_content_tower(
    settings: Settings, dataset: str, start: dt.date, end: dt.date, cfg: ContentTowerTraining, reuse: bool = True
) -> dict:
    """Train on the clean log of [start, end], log one MLflow run and register the version as ``candidate``.

    With ``reuse``, a version already trained with the same key (config, window, data fingerprint) is made
    ``candidate`` again instead of training a copy.
    """
    from pipelines.training.api import data_fingerprint, training_key

    data = Store(settings.data_dir, dataset)
    lineage = {"dataset": dataset, "start": start.isoformat(), "end": end.isoformat(),
               "data": data_fingerprint(data, start, end)}  # fmt: skip
    resolved = cfg.model_dump()
    key = training_key(NAME, resolved, {}, lineage)
    use_mlflow_experiment(settings, TRAINING_EXPERIMENT)
    from pipelines.training.api import find_trained  # the rankers' module: torch rankers, not at import

    existing = find_trained(settings, NAME, key) if reuse else None
    if existing is not None:
        mlflow.MlflowClient().set_registered_model_alias(REGISTERED, "candidate", existing.version)
        log.info("%s v%s was trained with key %s: reused as candidate", REGISTERED, existing.version, key)
        return {"model": NAME, "run_id": existing.run_id, "registered_model": REGISTERED,
                "version": str(existing.version), "reused": True, "training_key": key}  # fmt: skip
    items, impressions = read_window(data, start, end)
    with mlflow.start_run(run_name=f"{NAME} {key}") as run:
        mlflow.log_params({"model": NAME, **{f"train.{k}": v for k, v in cfg.train.model_dump().items()}})
        mlflow.log_dict({**resolved, "lineage": lineage}, "resolved_config.json")
        mlflow.set_tags({f"lineage.{k}": str(v) for k, v in lineage.items()} | {"training_key": key})
        fitted = fit_tower(items, impressions, cfg, [LogMetrics(mlflow.log_metrics)])
        mlflow.log_metrics({k: float(v) for k, v in fitted.counts.items()})
        final = fitted.history[fitted.counts["best_epoch"] - 1] if fitted.counts["best_epoch"] else {}
        mlflow.log_metrics({f"final_{k}": v for k, v in final.items()})
        version = log_and_register(fitted, items.head(5))
    return {"model": NAME, "run_id": run.info.run_id, "registered_model": REGISTERED, "version": version,
            "reused": False, "training_key": key, "metrics": final, **fitted.counts}  # fmt: skip


def train_for_catalog(settings: Settings, model: Model, request: TrainRequest) -> dict:
    """The content family's ``train`` hook: the request's window (or ``window_days`` clean days ending at its
    ``end``), the tower's config from the request (:meth:`ContentTowerTraining.from_request`)."""
    from pipelines.training.api import request_window

    start, end = request_window(settings, model, request)
    cfg = ContentTowerTraining.from_request(request)
    result = train_content_tower(settings, request.dataset, start, end, cfg, reuse=request.reuse)
    result["gate"] = gate_tower(result["version"], float(model.options.get("triplet_accuracy_floor", 0.6)))
    if result["gate"]["passed"]:
        from pipelines.features.content_tower import write_tower_features
        from pipelines.serving.content_vectors import load_tower

        result["features"] = write_tower_features(settings, request.dataset, load_tower(settings), end,
                                                  materialize=_view_applied(settings, request.dataset))  # fmt: skip
    return result


def gate_tower(version: str, floor: float) -> dict:
    """Make ``version`` ``champion`` when its held-out triplet accuracy reaches ``floor``; tag the outcome.

    The accuracy is the run's ``final_val_triplet_accuracy``: triplets of anchors held out of training (the
    validation share), on the weights early stopping kept. The tags ``gate`` (passed / blocked) and ``gate_reason``
    record why the alias moved or did not; a blocked version leaves the previous champion in place.
    """
    client = mlflow.MlflowClient()
    run = client.get_run(client.get_model_version(REGISTERED, version).run_id)
    accuracy = run.data.metrics.get("final_val_triplet_accuracy")
    passed = accuracy is not None and accuracy >= floor
    shown = "none (no validation triplets)" if accuracy is None else f"{accuracy:.4f}"
    reason = f"held-out triplet accuracy {shown} {'>=' if passed else 'below'} the floor {floor}"
    client.set_model_version_tag(REGISTERED, version, "gate", "passed" if passed else "blocked")
    client.set_model_version_tag(REGISTERED, version, "gate_reason", reason)
    if passed:
        client.set_registered_model_alias(REGISTERED, "champion", version)
    log.info("%s v%s: %s", REGISTERED, version, reason)
    return {"passed": passed, "triplet_accuracy": accuracy, "floor": floor, "reason": reason}


def _view_applied(settings: Settings, dataset: str) -> bool:
    """Whether the Feast registry has the tower's view (``materialize_features`` applies the repo); without it the
    offline table is still written and the next materialization loads it."""
    from pipelines.features.content_tower import VIEW
    from pipelines.features.store import get_store

    try:
        get_store(settings, dataset).get_feature_view(VIEW)
    except Exception:  # noqa: BLE001 - Feast raises its own not-found errors, or none when no registry exists yet
        log.warning("%s is not applied: the tower's rows are written offline only", VIEW)
        return False
    return True
