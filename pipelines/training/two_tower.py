"""The two-tower retrieval model's training (MODELS.md §8): clicked pairs of a window, the generic trainer, recall@k
of the held-out day against popularity, the pyfunc and its registration, the gate, and the ``retrieval``
family's ``train`` hook.

One MLflow run in ``coldstart_training`` logs the resolved config, the lineage (dataset, window, data fingerprint,
content tower version) as ``lineage.*`` tags, per-epoch metrics, recall@k per slice of the model and of the
popularity baseline, and the model, registered as ``coldstart_two_tower`` with alias ``candidate``. The pyfunc
embeds rows of items (``item_id``, ``category``, ``keywords``, ``content_vector``: a new item from content alone)
and, with ``params={"side": "users"}``, rows of users (``user_id``, profile fields, ``history``: clicked item ids,
newest first); :func:`load_two_tower` gives serving the same :func:`embed_items` / :func:`embed_users`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from pipelines.catalog import TRAINING_EXPERIMENT, Model
from pipelines.catalog import model as catalog_model
from pipelines.data.contract import Store
from pipelines.evaluation.retrieval import RetrievalEvalConfig, evaluate_two_tower
from pipelines.models.two_tower import TwoTower, TwoTowerConfig, TwoTowerSpec
from pipelines.settings import Settings, use_mlflow_experiment
from pipelines.training.config import TrainConfig, TrainRequest, request_train
from pipelines.training.trainer import Callback, EarlyStopping, LogMetrics, Trainer
from pipelines.training.two_tower_data import (
    TwoTowerDataConfig,
    TwoTowerEncoder,
    WindowLog,
    click_log_q,
    clicks_of,
    evaluate_recall,
    pair_tensors,
    popularity_scorer,
    read_log,
    recall_task,
)

log = logging.getLogger(__name__)

NAME = "two_tower"
EMBED_CHUNK = 65536  # rows per forward pass when embedding


def _default_train() -> TrainConfig:
    # In-batch negatives: the batch is the softmax's candidate set, so batches are larger than the content
    # tower's (512: 511 negatives a row). One thread: the towers are small, a second only synchronises.
    return TrainConfig(epochs=10, batch_size=512, lr=3e-3, patience=2, threads=1)


class TwoTowerTraining(BaseModel):
    """Everything a two-tower run can be told. Unknown keys are rejected at every level."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: TwoTowerConfig = Field(default_factory=TwoTowerConfig)
    data: TwoTowerDataConfig = Field(default_factory=TwoTowerDataConfig)
    train: TrainConfig = Field(default_factory=_default_train)
    k: int = Field(100, ge=1, description="Cut of recall@k (a retrieval channel hands ~100 items to the ranker).")
    evaluation: RetrievalEvalConfig = Field(
        default_factory=RetrievalEvalConfig,
        description="The held-out day's replay over the recall channels (not part of the training key).",
    )

    @classmethod
    def from_request(cls, request: TrainRequest, options: Mapping[str, Any] | None = None) -> TwoTowerTraining:
        """The model's defaults, then the request's explicitly set trainer knobs, then ``overrides`` (``model``,
        ``data``, ``train``, ``k``, ``evaluation``: on top of the catalog ``options``' ``evaluation``)."""
        train, overrides = request_train(_default_train(), request)
        evaluation = dict((options or {}).get("evaluation", {})) | overrides.pop("evaluation", {})
        return cls(**overrides, train=train, evaluation=evaluation)


@dataclass
class FittedTwoTower:
    """A trained model, its encoder, the per-epoch metrics and the data counts."""

    model: TwoTower
    encoder: TwoTowerEncoder
    history: list[dict[str, float]]
    counts: dict[str, int]


def fit_two_tower(log_: WindowLog, day: dt.date, cfg: TwoTowerTraining, tower: Any = None,
                  callbacks: list[Callback] | None = None) -> FittedTwoTower:  # fmt: skip
    """Train on the clicks before ``day`` (the held-out day, whose clicks validate); seeded.

    Args:
        log_: the window (:func:`~pipelines.training.two_tower_data.read_log`).
        day: the held-out day (the window's last).
        tower: a content tower (``TowerEmbedder``) whose vectors the item tower also reads, or None.
    """
    clicks = clicks_of(log_.impressions)
    clicks = clicks[clicks["item_id"].isin(log_.items["item_id"])]  # an item quarantined by validation
    held = clicks["event_time"] >= pd.Timestamp(day, tz="UTC")
    train_clicks, val_clicks = clicks[~held], clicks[held]
    if train_clicks.empty or val_clicks.empty:
        raise ValueError(f"training needs clicks before and on {day}: {len(train_clicks)}, {len(val_clicks)}")
    encoder = TwoTowerEncoder.fit(train_clicks, log_, cfg.data, tower)
    log_q = click_log_q(train_clicks)
    train, val = (pair_tensors(encoder, part, clicks, log_, log_q) for part in (train_clicks, val_clicks))
    torch.manual_seed(cfg.train.seed)
    model = TwoTower(encoder.spec(), cfg.model)
    model.block = cfg.train.batch_size
    trainer = Trainer(model, cfg.train, [EarlyStopping(), *(callbacks or [])])
    trainer.fit(train, val)
    model.eval()
    counts = {"train_pairs": len(train_clicks), "val_pairs": len(val_clicks), "users": len(encoder.users),
              "items": len(encoder.items), "catalog": len(log_.items), "epochs": trainer.state.epoch,
              "best_epoch": trainer.state.best_epoch}  # fmt: skip
    return FittedTwoTower(model, encoder, trainer.state.history, counts)


def embed_items(model: TwoTower, encoder: TwoTowerEncoder, items: pd.DataFrame) -> np.ndarray:
    """[n, d] unit vectors (float32) of ``items`` (``item_id``, ``category``, ``keywords``, ``content_vector``;
    a missing content field is unknown) from content and id: an id outside the vocabulary (a new item) is row 0."""
    from pipelines.serving.content_vectors import CONTENT_FIELDS

    items = items.assign(**{c: None for c in CONTENT_FIELDS if c not in items}).reset_index(drop=True)
    model.eval()
    parts = [np.zeros((0, model.cfg.dim), np.float32)]
    with torch.no_grad():
        for start in range(0, len(items), EMBED_CHUNK):
            x = encoder.item_tensors(items.iloc[start : start + EMBED_CHUNK])
            parts.append(model.encode_items(x["item"], x["tokens"], x["content"]).numpy())  # [n, d]
    return np.concatenate(parts)


def embed_users(model: TwoTower, encoder: TwoTowerEncoder, users: pd.DataFrame, histories: list[Any]) -> np.ndarray:
    """[n, d] unit vectors (float32) of ``users`` (``user_id`` and the profile fields it has) with their recent
    clicked item ids, newest first (empty for a new user): an unknown user is row 0 with its profile."""
    model.eval()
    users = users.reset_index(drop=True)
    parts = [np.zeros((0, model.cfg.dim), np.float32)]
    with torch.no_grad():
        for start in range(0, len(users), EMBED_CHUNK):
            stop = start + EMBED_CHUNK
            x = encoder.user_tensors(users.iloc[start:stop], list(histories[start:stop]))
            parts.append(model.encode_users(x["user"], x["profile"], x["history"]).numpy())  # [n, d]
    return np.concatenate(parts)


def two_tower_scorer(model: TwoTower, encoder: TwoTowerEncoder, task: Any, items: pd.DataFrame):
    """A recall scorer: the task users' vectors against the pool items' vectors (inner product)."""
    users = embed_users(model, encoder, task.users, task.histories)
    vectors = embed_items(model, encoder, items)
    row_of = pd.Index(items["item_id"])

    def score(rows: np.ndarray, pool: np.ndarray) -> np.ndarray:
        return users[rows] @ vectors[row_of.get_indexer(pool)].T  # [n, m]

    return score


def recall_metrics(fitted: FittedTwoTower, log_: WindowLog, day: dt.date, k: int) -> dict[str, float]:
    """recall@k of the model and of popularity on the held-out ``day``, per slice (``recall_<slice>_<name>``)."""
    task = recall_task(log_, day, fitted.encoder.history_len)
    scorers = {"two_tower": two_tower_scorer(fitted.model, fitted.encoder, task, log_.items),
               "popularity": popularity_scorer(task)}  # fmt: skip
    out = {}
    for name, result in evaluate_recall(task, scorers, k).items():
        out[f"recall_{name}_users"] = float(result["users"])
        out |= {f"recall_{name}_{s}": result[s] for s in scorers if s in result}
    return out


class TwoTowerModel(mlflow.pyfunc.PythonModel):
    """pyfunc: item rows -> ``item_id``, ``vector``; with ``params={"side": "users"}`` user rows (``history``:
    item ids) -> ``user_id``, ``vector``."""

    def load_context(self, context) -> None:
        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        tower = None
        if "tower_meta" in context.artifacts:
            from pipelines.serving.content_vectors import TowerEmbedder
            from pipelines.training.content_tower import ContentTowerModel

            wrapper = ContentTowerModel()
            files = {"meta": context.artifacts["tower_meta"], "weights": context.artifacts["tower_weights"]}
            wrapper.load_context(SimpleNamespace(artifacts=files))
            tower = TowerEmbedder.from_pyfunc(wrapper, meta["tower_version"])
        self.encoder = TwoTowerEncoder.from_dict(meta["encoder"], tower)
        spec = TwoTowerSpec(**{**meta["spec"], "profile": tuple(meta["spec"]["profile"])})
        self.model = TwoTower(spec, TwoTowerConfig(**meta["config"]))
        self.model.load_state_dict(torch.load(context.artifacts["weights"], weights_only=True))
        self.model.eval()

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return predict_frame(self.model, self.encoder, model_input, (params or {}).get("side", "items"))


def predict_frame(model: TwoTower, encoder: TwoTowerEncoder, frame: pd.DataFrame, side: str = "items") -> pd.DataFrame:
    """The pyfunc's output: ``item_id`` (or ``user_id``) and ``vector`` as lists of floats (what JSON carries)."""
    if side == "users":
        histories = frame["history"] if "history" in frame else [[]] * len(frame)
        vectors = embed_users(model, encoder, frame, [[] if h is None else list(h) for h in histories])
        return pd.DataFrame({"user_id": frame["user_id"].to_numpy(), "vector": [v.tolist() for v in vectors]})
    vectors = embed_items(model, encoder, frame)
    return pd.DataFrame({"item_id": frame["item_id"].to_numpy(), "vector": [v.tolist() for v in vectors]})


def _signature(items: pd.DataFrame, items_out: pd.DataFrame, users: pd.DataFrame, users_out: pd.DataFrame):
    """One signature for both sides: every column of the item and the user rows optional, param ``side``."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import ColSpec, Schema

    a, b = infer_signature(items, items_out, params={"side": "items"}), infer_signature(users, users_out)

    def optional(*schemas: Schema) -> Schema:
        columns = {c.name: c for schema in schemas for c in schema.inputs}
        return Schema([ColSpec(c.type, name, required=False) for name, c in columns.items()])

    return ModelSignature(optional(a.inputs, b.inputs), optional(a.outputs, b.outputs), a.params)


def log_and_register(fitted: FittedTwoTower, example: pd.DataFrame, users: pd.DataFrame, registered: str) -> str:
    """Log the model in the active run (the content tower it reads bundled), register a version of
    ``registered`` and alias it ``candidate``. ``example``: item rows; ``users``: user rows (profiles)."""
    from pipelines.training.content_data import CONTENT_COLUMNS
    from pipelines.training.registry import pip_requirements, plain_lists

    example = plain_lists(example[CONTENT_COLUMNS].reset_index(drop=True))
    output = predict_frame(fitted.model, fitted.encoder, example)
    users = users.head(len(example)).reset_index(drop=True).assign(history=[[int(i)] for i in example["item_id"]])
    signature = _signature(example, output, users, predict_frame(fitted.model, fitted.encoder, users, "users"))
    tower = fitted.encoder.tower
    meta = {"encoder": fitted.encoder.to_dict(), "spec": fitted.model.spec.__dict__,
            "config": fitted.model.cfg.model_dump(), "tower_version": getattr(tower, "version", None)}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.save(fitted.model.state_dict(), folder / "weights.pt")
        (folder / "meta.json").write_text(json.dumps(meta))
        artifacts = {"weights": str(folder / "weights.pt"), "meta": str(folder / "meta.json")}
        if tower is not None:
            torch.save(tower.model.state_dict(), folder / "tower.pt")
            (folder / "tower.json").write_text(json.dumps({"encoder": tower.encoder.to_dict(),
                                                           "spec": tower.encoder.spec().__dict__,
                                                           "config": tower.model.cfg.model_dump()}))  # fmt: skip
            artifacts |= {"tower_weights": str(folder / "tower.pt"), "tower_meta": str(folder / "tower.json")}
        info = mlflow.pyfunc.log_model(
            name="model", python_model=TwoTowerModel(), artifacts=artifacts, input_example=example,
            signature=signature, registered_model_name=registered,
            pip_requirements=pip_requirements(),
        )  # fmt: skip
    version = str(info.registered_model_version)
    mlflow.MlflowClient().set_registered_model_alias(registered, "candidate", version)
    return version


def train_two_tower(settings: Settings, dataset: str, start: dt.date, end: dt.date, cfg: TwoTowerTraining,
                    tower: Any = None, reuse: bool = True) -> dict:  # fmt: skip
    """Train on [start, end) with ``end`` held out, log one run with recall@k, register the version as
    ``candidate``; with ``reuse``, a version of the same key (config, window, data, tower) is made ``candidate``."""
    from pipelines.training.api import data_fingerprint, find_trained, training_key

    registered = catalog_model(NAME).registered_name
    data = Store(settings.data_dir, dataset)
    lineage = {"dataset": dataset, "start": start.isoformat(), "end": end.isoformat(),
               "data": data_fingerprint(data, start, end),
               "content_tower": getattr(tower, "version", "none")}  # fmt: skip
    resolved = cfg.model_dump(exclude={"evaluation"})  # how a version is judged does not change the version
    key = training_key(NAME, resolved, {}, lineage)
    use_mlflow_experiment(settings, TRAINING_EXPERIMENT)
    existing = find_trained(settings, NAME, key) if reuse else None
    if existing is not None:
        mlflow.MlflowClient().set_registered_model_alias(registered, "candidate", existing.version)
        log.info("%s v%s was trained with key %s: reused as candidate", registered, existing.version, key)
        return {"model": NAME, "run_id": existing.run_id, "registered_model": registered,
                "version": str(existing.version), "reused": True, "training_key": key}  # fmt: skip
    window = read_log(data, start, end)
    with mlflow.start_run(run_name=f"{NAME} {key}") as run:
        mlflow.log_params({"model": NAME, **{f"train.{k}": v for k, v in cfg.train.model_dump().items()}})
        mlflow.log_dict({**resolved, "lineage": lineage}, "resolved_config.json")
        mlflow.set_tags({f"lineage.{k}": str(v) for k, v in lineage.items()} | {"training_key": key})
        fitted = fit_two_tower(window, end, cfg, tower, [LogMetrics(mlflow.log_metrics)])
        mlflow.log_metrics({k: float(v) for k, v in fitted.counts.items()})
        recall = recall_metrics(fitted, window, end, cfg.k)
        mlflow.log_metrics({f"final_{k}": v for k, v in recall.items()} | {"recall_k": float(cfg.k)})
        version = log_and_register(fitted, window.items.head(5), window.users, registered)
    return {"model": NAME, "run_id": run.info.run_id, "registered_model": registered, "version": version,
            "reused": False, "training_key": key, "metrics": recall, **fitted.counts}  # fmt: skip


def gate_two_tower(version: str, margin: float = 0.0) -> dict:
    """Make ``version`` ``champion`` when its held-out recall@k (all items) beats popularity's by more than
    ``margin``; tag the outcome (``gate``, ``gate_reason``, ``recall_at_k``, ``popularity_recall_at_k``).

    Popularity is the floor: it is what any feed gets without a model, so a retrieval model that cannot beat it
    on the same users, day and pool must not replace one that did. A blocked version leaves the champion as is.
    """
    client = mlflow.MlflowClient()
    registered = catalog_model(NAME).registered_name
    metrics = client.get_run(client.get_model_version(registered, version).run_id).data.metrics
    ours, floor = metrics.get("final_recall_all_two_tower"), metrics.get("final_recall_all_popularity")
    k = int(metrics.get("recall_k", 0))
    passed = ours is not None and floor is not None and ours > floor + margin
    shown = "none (no held-out users)" if ours is None else f"{ours:.4f}"
    reason = (f"held-out recall@{k} {shown} {'above' if passed else 'not above'} popularity's "
              f"{'none' if floor is None else f'{floor:.4f}'} + margin {margin}")  # fmt: skip
    tags = {"gate": "passed" if passed else "blocked", "gate_reason": reason,
            "recall_at_k": str(ours), "popularity_recall_at_k": str(floor)}  # fmt: skip
    for name, value in tags.items():
        client.set_model_version_tag(registered, version, name, value)
    if passed:
        client.set_registered_model_alias(registered, "champion", version)
    log.info("%s v%s: %s", registered, version, reason)
    return {"passed": passed, "recall": ours, "popularity_recall": floor, "margin": margin, "reason": reason}


def train_for_catalog(settings: Settings, model: Model, request: TrainRequest) -> dict:
    """The retrieval family's ``train`` hook: the request's window (its last day held out), the champion content
    tower's vectors when there is one (``data.content_tower``), then the gate against popularity, then the
    held-out day replayed over the recall channels (``evaluation``: recall@k per channel and cold-start slice,
    new-item coverage; the report is logged to the version's run). The replay does not gate."""
    from pipelines.serving.content_vectors import load_tower
    from pipelines.training.api import request_window

    start, end = request_window(settings, model, request)
    cfg = TwoTowerTraining.from_request(request, model.options)
    tower = load_tower(settings) if cfg.data.content_tower else None
    result = train_two_tower(settings, request.dataset, start, end, cfg, tower, reuse=request.reuse)
    result["gate"] = gate_two_tower(result["version"], float(model.options.get("recall_margin", 0.0)))
    result["evaluation"] = evaluate_two_tower(settings, request.dataset, start, end, result["version"],
                                              result["run_id"], cfg.evaluation, tower)  # fmt: skip
    return result


@dataclass
class LoadedTwoTower:
    """A registered two-tower version, ready to embed items and users."""

    model: TwoTower
    encoder: TwoTowerEncoder
    version: str

    def embed_items(self, items: pd.DataFrame) -> np.ndarray:
        return embed_items(self.model, self.encoder, items)

    def embed_users(self, users: pd.DataFrame, histories: list[Any]) -> np.ndarray:
        return embed_users(self.model, self.encoder, users, histories)


def load_two_tower(settings: Settings, alias: str = "champion") -> LoadedTwoTower | None:
    """The two-tower version ``alias`` points at, or None when no version has it."""
    from pipelines.catalog.registry import load_by_alias

    loaded = load_by_alias(settings, NAME, alias)
    if loaded is None:
        log.info("no %s@%s", NAME, alias)
        return None
    wrapper, version = loaded
    return LoadedTwoTower(wrapper.model, wrapper.encoder, version)
