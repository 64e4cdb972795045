"""Train one ranker on a point-in-time training set, track it in MLflow and register it as ``candidate``."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging

import numpy as np
import pandas as pd

from pipelines.data.contract import Store
from pipelines.features.store import get_store
from pipelines.features.training_set import build_training_set
from pipelines.models import RANKERS
from pipelines.settings import Settings, get_settings, use_mlflow_experiment
from pipelines.training.dataset import INPUT_COLUMNS, FeatureEncoder
from pipelines.training.registry import build_ranker, log_and_register
from pipelines.training.trainer import (
    Checkpoint,
    EarlyStopping,
    LogMetrics,
    TrainConfig,
    Trainer,
    distributed_rank,
)

log = logging.getLogger(__name__)

MLFLOW_EXPERIMENT = "coldstart_training"
# Which versioned feature service each model reads.
SERVICES = {"base": "esmm_v1", "shared_bottom": "esmm_v1", "esmm": "esmm_v1", "mmoe": "esmm_v1", "ple": "ple_uie_v1"}


def registered_name(model: str) -> str:
    return f"coldstart_{model}"


def validation_metrics(model, data) -> dict[str, float]:
    """AUCs on the validation day: CTR and CTCVR over all impressions, CVR over clicked ones (scikit-learn)."""
    import torch
    from sklearn.metrics import roc_auc_score

    model.eval()
    with torch.no_grad():
        out = model(data)
    click, conv = data["click"].numpy(), data["conversion"].numpy()
    metrics = {}
    if 0 < click.sum() < len(click):
        metrics["val_auc_ctr"] = roc_auc_score(click, out["p_ctr"].numpy())
        metrics["val_auc_ctcvr"] = roc_auc_score(click * conv, out["p_ctcvr"].numpy()) if (click * conv).any() else 0.5
    clicked = click > 0
    if clicked.any() and 0 < conv[clicked].sum() < clicked.sum():
        metrics["val_auc_cvr"] = roc_auc_score(conv[clicked], out["p_cvr"].numpy()[clicked])
    return metrics


def warm_start(net, uri: str, train: dict) -> int:
    """Copy the weights of ``uri`` whose names and shapes match into ``net``; returns how many tensors."""
    import mlflow
    import torch

    source = mlflow.pyfunc.load_model(uri).unwrap_python_model().model.state_dict()
    target = net.state_dict()
    matching = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
    net.load_state_dict(matching, strict=False)
    uie = getattr(net, "uie", None)
    if uie is not None:
        sample = {k: v[:4096] for k, v in train.items()}
        with torch.no_grad():
            uie.user_memory.warm_start(uie._user_vector(sample), torch.Generator().manual_seed(0))
    return len(matching)


def split_by_time(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The last day validates, the days before train."""
    days = frame["event_time"].dt.date
    last = days.max()
    if days.nunique() < 2:
        raise ValueError("training needs at least two days: the last one is the validation day")
    return frame[days < last], frame[days == last]


def train_model(
    settings: Settings,
    model: str,
    frame: pd.DataFrame,
    model_config: dict | None = None,
    train_config: dict | None = None,
    lineage: dict | None = None,
    warm_start_from: str | None = None,
) -> dict:
    """Fit ``model`` on ``frame`` (time split), log the run and register the version as ``candidate``.

    Args:
        warm_start_from: an MLflow model URI (e.g. ``models:/coldstart_ple@champion``) whose weights of matching
            name and shape initialise the new model; UIE's centroids are then re-seeded (k-means++) from the
            warm user tower, the remedy for centroid collapse.
    """
    import mlflow

    if model not in RANKERS:
        raise ValueError(f"unknown model {model!r}; choose from {sorted(RANKERS)}")
    cfg = RANKERS[model].config_class(**(model_config or {}))  # unknown keys fail here
    tcfg = TrainConfig(**(train_config or {}))
    train_frame, val_frame = split_by_time(frame)
    encoder = FeatureEncoder.fit(train_frame)
    train, val = encoder.transform(train_frame), encoder.transform(val_frame)
    resolved = cfg.model_dump()
    import torch

    torch.manual_seed(tcfg.seed)  # the initial weights too: same config, same data, same model
    net = build_ranker(model, encoder, resolved)
    if warm_start_from:
        loaded = warm_start(net, warm_start_from, train)
        lineage = {**(lineage or {}), "warm_start_from": warm_start_from, "warm_started_tensors": loaded}
    key = hashlib.sha1(json.dumps([model, resolved, tcfg.model_dump(), lineage], default=str).encode()).hexdigest()[:12]
    rank, world = distributed_rank()
    checkpoints = settings.home / "checkpoints" / f"{model}-{key}" / (f"ddp{world}" if world > 1 else "single")

    def fit(sink) -> Trainer:
        callbacks = [EarlyStopping(), LogMetrics(sink)] + ([Checkpoint(checkpoints)] if rank == 0 else [])
        trainer = Trainer(net, tcfg, callbacks, validation_metrics)
        if (checkpoints / "last.pt").is_file():
            log.info("resuming %s from %s", model, checkpoints)
            trainer.resume(checkpoints / "last.pt")
        trainer.fit(train, val)
        return trainer

    if rank > 0:  # under torchrun only rank 0 talks to MLflow
        trainer = fit(None)
        return {"model": model, "rank": rank, "epochs": trainer.state.epoch}
    use_mlflow_experiment(settings, MLFLOW_EXPERIMENT)
    with mlflow.start_run(run_name=f"{model} {key}") as run:
        mlflow.log_params(
            {"model": model, "world_size": world, **{f"train.{k}": v for k, v in tcfg.model_dump().items()}}
        )
        mlflow.log_dict({"model": resolved, "train": tcfg.model_dump(), "lineage": lineage}, "resolved_config.json")
        mlflow.set_tags({f"lineage.{k}": str(v) for k, v in (lineage or {}).items()})
        mlflow.log_metrics({"train_rows": len(train_frame), "val_rows": len(val_frame)})
        trainer = fit(mlflow.log_metrics)
        final = validation_metrics(net, val)
        mlflow.log_metrics({f"final_{k}": v for k, v in final.items()})
        if getattr(net, "uie", None) is not None:
            mlflow.log_metric("uie_user_centroid_entropy", net.uie.user_memory.usage_entropy())
        example = val_frame[[c for c in INPUT_COLUMNS if c in val_frame]].head(5).reset_index(drop=True)
        version = log_and_register(net, model, resolved, encoder, example, registered_name(model))
    return {
        "model": model,
        "run_id": run.info.run_id,
        "registered_model": registered_name(model),
        "version": version,
        "epochs": trainer.state.epoch,
        "world_size": world,
        "metrics": {k: float(v) for k, v in final.items()},
    }


def train_for_run(
    model: str,
    dataset: str,
    start: dt.date,
    end: dt.date,
    model_config: dict | None = None,
    train_config: dict | None = None,
) -> dict:
    """Point-in-time training set for [start, end] from Feast, then :func:`train_model`."""
    settings = get_settings()
    settings.ensure_home()
    service = SERVICES.get(model, "esmm_v1")
    frame = build_training_set(get_store(settings, dataset), Store(settings.data_dir, dataset), start, end, service)
    lineage = {"dataset": dataset, "start": start.isoformat(), "end": end.isoformat(), "feature_service": service}
    result = train_model(settings, model, frame, model_config, train_config, lineage)
    return result | {"rows": int(len(frame)), "positive_rate": float(np.mean(frame["click"]))}
