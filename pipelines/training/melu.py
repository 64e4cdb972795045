"""MeLU's training (Lee et al., KDD 2019): the meta-learning loop on MovieLens-1M (tasks from MeLU's split, global
updates over task batches), evaluation per scenario (adapt on each user's support set, MAE / RMSE on the query
set), the pyfunc that serves it and its MLflow registration. The MeLU family's ``train`` hook.

Fields: ``pipelines.data.movielens.USER_FIELDS`` and ``ITEM_FIELDS``; genres as a multi-hot field; with
``MeLUConfig.content_tower`` also the item's content-tower vector (``pipelines.training.ml1m_tower``), trained
on the warm scenario and computed from content for every item, new ones included.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch

from pipelines.catalog import TRAINING_EXPERIMENT, Model
from pipelines.catalog import model as catalog_model
from pipelines.data.movielens import DATASET, ITEM_FIELDS, USER_FIELDS, load_rows
from pipelines.models.melu import MeLU, MeLUConfig, Task
from pipelines.settings import Settings, use_mlflow_experiment
from pipelines.training.config import TrainRequest
from pipelines.training.ml1m_tower import ItemTower, MovieLensTowerConfig, fit_ml1m_tower

log = logging.getLogger(__name__)

NAME = "melu"


@dataclass
class MeluEncoder:
    """Vocabularies of the categorical fields (0 = unseen), and the content tower when MeLU reads its vectors
    (then rows need ``title`` and ``release_year`` beside ``content_vector``: a vector comes from content alone)."""

    vocab: dict[str, dict[str, int]]
    tower: ItemTower | None = None

    @classmethod
    def fit(cls, rows: pd.DataFrame) -> MeluEncoder:
        return cls(
            {
                c: {v: i + 1 for i, v in enumerate(sorted(rows[c].astype(str).unique()))}
                for c in USER_FIELDS + ITEM_FIELDS
            }
        )

    def cardinalities(self) -> list[int]:
        return [len(self.vocab[c]) for c in USER_FIELDS + ITEM_FIELDS]

    def transform(self, rows: pd.DataFrame) -> dict:
        rows = rows.reset_index(drop=True)
        # a dict lookup per value: Series.map with a dict builds a Series per call, most of tasks_of's time
        sparse = np.stack(
            [np.fromiter((self.vocab[c].get(v, 0) for v in rows[c].astype(str)), np.int64, len(rows))
             for c in USER_FIELDS + ITEM_FIELDS], 1
        ).reshape(len(rows), -1)  # fmt: skip
        genres = np.stack([np.asarray(v, dtype=np.float32) for v in rows["content_vector"]])
        out = {"sparse": torch.from_numpy(sparse), "multi_hot": [torch.from_numpy(genres)]}
        if self.tower is not None:
            out["dense"] = torch.from_numpy(self.tower.embed(rows))  # [n, tower dim]
        if "rating" in rows:
            out["rating"] = torch.from_numpy(rows["rating"].to_numpy(np.float32))
        return out


def tasks_of(rows: pd.DataFrame, encoder: MeluEncoder) -> dict[str, list[Task]]:
    """scenario -> [(support, query)] with one task per user."""
    out: dict[str, list[Task]] = {}
    if encoder.tower is not None:
        rows = encoder.tower.attach(rows)  # each item embedded once, not once per task
    for (scenario, _user), group in rows.groupby(["scenario", "user_id"], sort=True):
        support, query = group[group["role"] == "support"], group[group["role"] == "query"]
        out.setdefault(scenario, []).append((encoder.transform(support), encoder.transform(query)))
    return out


def evaluate(model: MeLU, tasks: list[Task]) -> dict[str, float]:
    """Adapt on each support set, then MAE and RMSE over all query ratings."""
    errors = []
    for support, query in tasks:
        errors.append((model.predict(support, query) - query["rating"]).numpy())
    e = np.concatenate(errors)
    return {"mae": float(np.abs(e).mean()), "rmse": float(np.sqrt((e**2).mean())), "tasks": len(tasks)}


def fit_melu(
    model: MeLU, train: list[Task], epochs: int, seed: int, on_epoch: Callable[[int, float], None] | None = None
) -> list[float]:
    """Meta-train ``model`` in place: Adam at ``cfg.meta_lr`` over shuffled batches of ``cfg.tasks_per_batch`` tasks.

    Args:
        model: a MeLU whose config gives the batch size, the local update and the global learning rate.
        train: the tasks to meta-train on (MeLU: the warm scenario).
        epochs: passes over ``train``.
        seed: seeds the task order (the model's initialization is the caller's).
        on_epoch: called with (epoch from 1, mean meta loss of the epoch), e.g. to log to MLflow.

    Returns:
        The mean meta loss of each epoch.
    """
    cfg = model.cfg
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.meta_lr)
    generator = torch.Generator().manual_seed(seed)
    history = []
    # MeLU's tensors are tiny (one user's ratings): intra-op threads only add overhead, and on a busy 2-core
    # machine two threads made an epoch 6-7x slower than one (benchmarks/melu_vs_widedeep.py).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _meta_epochs(model, optimizer, generator, train, epochs, on_epoch, history)
    finally:
        torch.set_num_threads(threads)
    return history


def _meta_epochs(model, optimizer, generator, train, epochs, on_epoch, history) -> None:
    cfg = model.cfg
    for epoch in range(epochs):
        order = torch.randperm(len(train), generator=generator).tolist()
        losses = []
        for start in range(0, len(order), cfg.tasks_per_batch):
            batch = [train[i] for i in order[start : start + cfg.tasks_per_batch]]
            loss = model.meta_loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        history.append(float(np.mean(losses)))
        if on_epoch is not None:
            on_epoch(epoch + 1, history[-1])


def build_melu(
    rows: pd.DataFrame, cfg: MeLUConfig, seed: int, tower_cfg: MovieLensTowerConfig | None = None
) -> tuple[MeluEncoder, MeLU]:
    """The encoder (with a content tower trained on the warm scenario when ``cfg.content_tower``) and an
    initialised MeLU, seeded after the tower: training the tower does not move MeLU's initial weights, and
    without it the draw is the one ``train_melu`` always made."""
    encoder = MeluEncoder.fit(rows)
    if cfg.content_tower:
        encoder.tower = fit_ml1m_tower(rows, tower_cfg or MovieLensTowerConfig(), seed)
    torch.manual_seed(seed)
    n_genres = rows["content_vector"].iloc[0].shape[0]
    return encoder, MeLU(encoder.cardinalities(), [n_genres], cfg, encoder.tower.dim if encoder.tower else 0)


def train_melu(
    settings: Settings,
    cfg: MeLUConfig,
    epochs: int = 20,
    seed: int = 7,
    max_tasks: int | None = None,
    tower_cfg: MovieLensTowerConfig | None = None,
) -> dict:
    """Meta-train on the warm scenario, evaluate every scenario, log one MLflow run, register ``candidate``."""
    rows = load_rows(settings.data_dir)
    encoder, model = build_melu(rows, cfg, seed, tower_cfg)
    tasks = tasks_of(rows, encoder)
    train = tasks["warm"][:max_tasks] if max_tasks else tasks["warm"]
    use_mlflow_experiment(settings, TRAINING_EXPERIMENT)
    with mlflow.start_run(run_name=f"melu-{cfg.local_steps}") as run:
        mlflow.log_params({"model": NAME, "epochs": epochs, **cfg.model_dump()})
        mlflow.set_tags({"lineage.dataset": DATASET, "lineage.split": "melu"})
        if encoder.tower is not None:
            mlflow.log_dict((tower_cfg or MovieLensTowerConfig()).model_dump(), "tower_config.json")
            mlflow.log_metrics({f"tower_{k}": v for k, v in encoder.tower.metrics.items()})
        fit_melu(model, train, epochs, seed, on_epoch=lambda e, loss: mlflow.log_metric("meta_loss", loss, step=e))
        scores = {name: evaluate(model, scenario_tasks[:max_tasks] if max_tasks else scenario_tasks)
                  for name, scenario_tasks in tasks.items()}  # fmt: skip
        for name, score in scores.items():
            mlflow.log_metrics({f"{name}_mae": score["mae"], f"{name}_rmse": score["rmse"]})
        first = rows[rows["scenario"] == "new_user"]
        first = first[first["user_id"] == first["user_id"].iloc[0]]
        example = first.assign(role=np.where(first["role"] == "support", "support", "candidate"))
        columns = [*USER_FIELDS, *ITEM_FIELDS, "item_id", "content_vector", "title", "rating", "role"]
        version = _register(model, cfg, encoder, example[columns].reset_index(drop=True))
    return {"run_id": run.info.run_id, "registered_model": catalog_model(NAME).registered_name, "version": version,
            "scores": scores}  # fmt: skip


def train_for_catalog(settings: Settings, model: Model, request: TrainRequest) -> dict:
    """The MeLU family's ``train`` hook: the request's overrides configure MeLU, its epochs and seed the loop."""
    result = train_melu(settings, MeLUConfig(**request.overrides), epochs=request.train.epochs, seed=request.train.seed)
    return result | {"model": model.name}


class MeluModel(mlflow.pyfunc.PythonModel):
    """pyfunc: rows with ``role`` = support (rated) or candidate -> predicted ratings of the candidates."""

    def load_context(self, context) -> None:
        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        tower = ItemTower.load(meta["tower"], context.artifacts["tower"]) if meta.get("tower") else None
        self.encoder = MeluEncoder(meta["vocab"], tower)
        dense_dim = tower.dim if tower else 0
        self.model = MeLU(meta["cardinalities"], meta["multi_hot"], MeLUConfig(**meta["config"]), dense_dim)
        self.model.load_state_dict(torch.load(context.artifacts["weights"], weights_only=True))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        support = model_input[model_input["role"] == "support"]
        candidates = model_input[model_input["role"] == "candidate"].drop(columns=["rating"], errors="ignore")
        ratings = self.model.predict(self.encoder.transform(support), self.encoder.transform(candidates))
        return pd.DataFrame({"item_id": candidates["item_id"].to_numpy(), "rating": ratings.numpy()})


def _register(model: MeLU, cfg: MeLUConfig, encoder: MeluEncoder, example: pd.DataFrame) -> str:
    from mlflow.models import infer_signature

    from pipelines.training.registry import plain_lists

    example = plain_lists(example)
    candidates = example[example["role"] == "candidate"]
    support = example[example["role"] == "support"]
    output = pd.DataFrame(
        {"item_id": candidates["item_id"].to_numpy(),
         "rating": model.predict(encoder.transform(support), encoder.transform(candidates)).numpy()}
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.save(model.state_dict(), folder / "weights.pt")
        meta = {
            "vocab": encoder.vocab,
            "cardinalities": encoder.cardinalities(),
            "multi_hot": [model.multi_hot[0].in_features],
            "config": cfg.model_dump(),
        }
        artifacts = {"weights": str(folder / "weights.pt"), "meta": str(folder / "meta.json")}
        if encoder.tower is not None:  # the tower itself, not a vector table: it embeds items released later
            meta["tower"], tower_path = encoder.tower.save(folder)
            artifacts["tower"] = str(tower_path)
        (folder / "meta.json").write_text(json.dumps(meta))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=MeluModel(),
            artifacts=artifacts,
            input_example=example,
            signature=infer_signature(example, output),
            registered_model_name=catalog_model(NAME).registered_name,
        )
    version = str(info.registered_model_version)
    mlflow.MlflowClient().set_registered_model_alias(catalog_model(NAME).registered_name, "candidate", version)
    return version
