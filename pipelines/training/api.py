"""Train a model of the catalog (:func:`train`), and the rankers' way of doing it: a point-in-time training set
from Feast, the generic trainer, one MLflow run, a registered version with alias ``candidate``."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shutil

import numpy as np
import pandas as pd

from pipelines.catalog import TRAINING_EXPERIMENT, Model
from pipelines.catalog import model as catalog_model
from pipelines.data.contract import Store
from pipelines.features.store import get_store
from pipelines.features.training_set import build_training_set, view_joins
from pipelines.models import RANKERS
from pipelines.settings import Settings, get_settings, use_mlflow_experiment
from pipelines.training.config import TrainConfig, TrainRequest
from pipelines.training.dataset import ID_FIELDS, INPUT_COLUMNS, SPARSE, FeatureEncoder
from pipelines.training.registry import build_ranker, log_and_register
from pipelines.training.trainer import Checkpoint, EarlyStopping, LogMetrics, Trainer, distributed_rank

log = logging.getLogger(__name__)


def train(model: str, request: TrainRequest) -> dict:
    """Train ``model`` as its family does (the family's ``train`` hook); settings from the environment."""
    entry = catalog_model(model)
    settings = get_settings()
    settings.ensure_home()
    return entry.call("train", settings, entry, request)


def request_window(settings: Settings, model: Model, request: TrainRequest) -> tuple[dt.date, dt.date]:
    """A train request's window: as given, or ``window_days`` clean days ending at its ``end``."""
    if request.start is None:
        if request.end is None:
            raise ValueError(f"training {model.name} needs the window's last day (`end`)")
        start, end = training_window(Store(settings.data_dir, request.dataset), request.end, request.window_days)
    else:
        start, end = request.start, request.end or request.start
    return start, end


def train_ranker(settings: Settings, model: Model, request: TrainRequest) -> dict:
    """The rankers' ``train`` hook: the request's window (or ``window_days`` clean days ending at its ``end``),
    POSO and UIE as asked, then :func:`train_for_run`."""
    start, end = request_window(settings, model, request)
    config = {"poso": request.poso} | ({"uie": {}} if request.uie and model.options.get("uie") else {})
    return train_for_run(model.name, request.dataset, start, end, config | request.overrides,
                         request.train.model_dump(exclude_defaults=True), reuse=request.reuse,
                         settings=settings)  # fmt: skip


def output_aucs(out, data) -> dict[str, float]:
    """AUCs from a model's outputs: CTR and CTCVR over all impressions, CVR over clicked ones (scikit-learn)."""
    from sklearn.metrics import roc_auc_score

    click, conv = data["click"].numpy(), data["conversion"].numpy()
    metrics = {}
    if 0 < click.sum() < len(click):
        metrics["val_auc_ctr"] = roc_auc_score(click, out["p_ctr"].numpy())
        metrics["val_auc_ctcvr"] = roc_auc_score(click * conv, out["p_ctcvr"].numpy()) if (click * conv).any() else 0.5
    clicked = click > 0
    if clicked.any() and 0 < conv[clicked].sum() < clicked.sum():
        metrics["val_auc_cvr"] = roc_auc_score(conv[clicked], out["p_cvr"].numpy()[clicked])
    return metrics


def warm_start(net, uri: str, train: dict, encoder: FeatureEncoder) -> int:
    """Copy the weights of ``uri`` into ``net``; returns how many tensors.

    Id tables are copied row by row through the two vocabularies (an id's index in one training window is not
    its index in the next, even when the tables have the same size): each id both know keeps its learned row,
    row 0 (the default) is copied, new ids keep their fresh init. Other tensors are copied where name and shape
    match.
    """
    import mlflow
    import torch

    wrapper = mlflow.pyfunc.load_model(uri).unwrap_python_model()
    source = wrapper.model.state_dict()
    tables = _copy_id_rows(net, source, wrapper.encoder, encoder)
    target = net.state_dict()
    matching = {k: v for k, v in source.items() if k in target and k not in tables and target[k].shape == v.shape}
    net.load_state_dict(matching, strict=False)
    matching |= dict.fromkeys(tables)
    uie = getattr(net, "uie", None)
    if uie is not None:
        sample = {k: v[:4096] for k, v in train.items()}
        with torch.no_grad():
            uie.user_memory.warm_start(uie._user_vector(sample), torch.Generator().manual_seed(0))
    return len(matching)


def _copy_id_rows(net, source: dict, old: FeatureEncoder, new: FeatureEncoder) -> set[str]:
    """Copy the rows of every id table (:class:`EmbeddingLayer` over the sparse fields) by vocabulary key;
    returns the state-dict names handled."""
    import torch

    from pipelines.models.layers import EmbeddingLayer

    done = set()
    for prefix, module in net.named_modules():
        if not isinstance(module, EmbeddingLayer) or len(module.tables) != len(SPARSE):
            continue
        for i, column in enumerate(SPARSE):
            name = f"{prefix}.tables.{i}.weight" if prefix else f"tables.{i}.weight"
            weight, rows = module.tables[i].weight, source.get(name)
            if rows is None or rows.shape[1] != weight.shape[1]:
                continue
            before = old.vocab.get(column, {})
            pairs = [
                (j, before[key])
                for key, j in new.vocab[column].items()
                if before.get(key, rows.shape[0]) < rows.shape[0]
            ]
            with torch.no_grad():
                weight[0] = rows[0]
                if pairs:
                    to, source_rows = (torch.tensor(v) for v in zip(*pairs, strict=True))
                    weight[to] = rows[source_rows]
            done.add(name)
    return done


def split_by_time(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The last day validates, the days before train."""
    days = frame["event_time"].dt.date
    last = days.max()
    if days.nunique() < 2:
        raise ValueError("training needs at least two days: the last one is the validation day")
    is_last = (days == last).to_numpy()
    first_of_last = int(is_last.argmax())
    if not is_last[first_of_last:].all():  # not ordered by time: boolean masks (copies)
        return frame[~is_last], frame[is_last]
    # ordered (as build_training_set returns it): two slices, no copy of a multi-GB frame
    return frame.iloc[:first_of_last], frame.iloc[first_of_last:]


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
    if model not in RANKERS:
        raise ValueError(f"unknown model {model!r}; choose from {sorted(RANKERS)}")
    cfg = RANKERS[model].config_class(**(model_config or {}))  # unknown keys fail here
    tcfg = TrainConfig(**(train_config or {}))
    # The caller's frame is handed over: once encoded it is freed (GBs at 10M impressions).
    train, val, encoder, rows, example = _encoded(frame, tcfg)
    del frame
    resolved = cfg.model_dump()
    import torch

    torch.manual_seed(tcfg.seed)  # the initial weights too: same config, same data, same model
    net = build_ranker(model, encoder, resolved)
    if warm_start_from:
        loaded = warm_start(net, warm_start_from, train, encoder)
        lineage = {**(lineage or {}), "warm_start_from": warm_start_from, "warm_started_tensors": loaded}
    key = training_key(model, resolved, tcfg.model_dump(), lineage)
    rank, world = distributed_rank()
    checkpoints = settings.home / "checkpoints" / f"{model}-{key}" / (f"ddp{world}" if world > 1 else "single")

    def fit(sink) -> Trainer:
        callbacks = [EarlyStopping(), LogMetrics(sink)] + ([Checkpoint(checkpoints)] if rank == 0 else [])
        trainer = Trainer(net, tcfg, callbacks, output_aucs)
        if (checkpoints / "last.pt").is_file():
            log.info("resuming %s from %s", model, checkpoints)
            trainer.resume(checkpoints / "last.pt")
        trainer.fit(train, val)
        return trainer

    if rank > 0:  # under torchrun only rank 0 talks to MLflow
        trainer = fit(None)
        return {"model": model, "rank": rank, "epochs": trainer.state.epoch}
    use_mlflow_experiment(settings, TRAINING_EXPERIMENT)
    run = _Run(model, key, world, tcfg, resolved, lineage)
    result = run.track(fit, rows, lambda trained: log_and_register(trained, model, resolved, encoder, example,
                                                                   catalog_model(model).registered_name))  # fmt: skip
    # The checkpoint only serves to resume a killed run: once the version is registered, a retrain starts afresh.
    shutil.rmtree(checkpoints, ignore_errors=True)
    return result


def _encoded(frame: pd.DataFrame, tcfg: TrainConfig) -> tuple[dict, dict, FeatureEncoder, dict, pd.DataFrame]:
    """Time split, encoder fitted on the training days with the minimum id counts of ``tcfg``: (train, val,
    encoder, row counts and default-row shares, a 5-row example)."""
    train_frame, val_frame = split_by_time(frame)
    encoder = FeatureEncoder.fit(train_frame, min_counts=tcfg.min_counts)
    train, val = encoder.transform(train_frame), encoder.transform(val_frame)
    rows = {"train_rows": len(train_frame), "val_rows": len(val_frame)}
    # How much row 0 learns from folded ids (train) and how much of the next day it scores (val), per field.
    for split, data in (("train", train), ("val", val)):
        for column in ID_FIELDS:
            on_row_0 = data["sparse"][:, SPARSE.index(column)] == 0
            rows[f"{split}_default_share_{column}"] = float(on_row_0.float().mean())
    example = val_frame[[c for c in INPUT_COLUMNS if c in val_frame]].head(5).reset_index(drop=True).copy()
    return train, val, encoder, rows, example


class _Run:
    """One tracked training run: params, resolved config and lineage, per-epoch metrics, the registered version."""

    def __init__(self, model: str, key: str, world: int, tcfg: TrainConfig, resolved: dict, lineage: dict | None):
        self.model, self.key, self.world, self.tcfg, self.resolved = model, key, world, tcfg, resolved
        self.lineage = lineage or {}

    def track(self, fit, rows: dict, register) -> dict:
        """``fit(sink)`` inside an MLflow run, then ``register(net)``; returns the training summary."""
        import mlflow

        train = self.tcfg.model_dump()
        with mlflow.start_run(run_name=f"{self.model} {self.key}") as run:
            mlflow.log_params({"model": self.model, "world_size": self.world,
                               **{f"train.{k}": v for k, v in train.items()}})  # fmt: skip
            mlflow.log_dict({"model": self.resolved, "train": train, "lineage": self.lineage}, "resolved_config.json")
            mlflow.set_tags({f"lineage.{k}": str(v) for k, v in self.lineage.items()} | {"training_key": self.key})
            mlflow.log_metrics(rows)
            trainer = fit(mlflow.log_metrics)
            # The model holds the weights of the epoch early stopping kept, and that epoch's AUCs were computed on
            # the same day with the same weights: no second pass over the validation day.
            final = {k: v for k, v in trainer.kept_metrics().items() if k.startswith("val_auc")}
            mlflow.log_metrics({f"final_{k}": v for k, v in final.items()})
            net = trainer.model
            if getattr(net, "uie", None) is not None:
                mlflow.log_metric("uie_user_centroid_entropy", net.uie.user_memory.usage_entropy())
            version = register(net)
        return {
            "model": self.model,
            "run_id": run.info.run_id,
            "registered_model": catalog_model(self.model).registered_name,
            "version": version,
            "epochs": trainer.state.epoch,
            "world_size": self.world,
            "metrics": {k: float(v) for k, v in final.items()},
        }


def training_key(model: str, resolved: dict, train: dict, lineage: dict | None) -> str:
    """What identifies a training run: the model, its resolved config, the training config and the lineage
    (dataset, window, feature service, data fingerprint). Same key, same weights (training is seeded)."""
    return hashlib.sha1(json.dumps([model, resolved, train, lineage], default=str).encode()).hexdigest()[:12]


def training_window(data: Store, end: dt.date, window_days: int) -> tuple[dt.date, dt.date]:
    """The days to train on: ``window_days`` ending at ``end``, clipped to the first clean day.

    Raises:
        ValueError: ``end`` has no clean impressions, or fewer than two clean days are in the window (the last
            one validates).
    """
    days = data.partitions("impressions", layer="clean")
    if end not in days:
        raise ValueError(f"no clean impressions on {end} in {data.dataset!r} (clean days: "
                         f"{days[0] if days else '-'}..{days[-1] if days else '-'}): validate it first")  # fmt: skip
    inside = [d for d in days if end - dt.timedelta(days=window_days - 1) <= d <= end]
    if len(inside) < 2:
        raise ValueError(f"the window ending {end} holds {len(inside)} clean day(s) of {data.dataset!r}; training "
                         "needs two (the last one validates)")  # fmt: skip
    return inside[0], end


def data_fingerprint(data: Store, start: dt.date, end: dt.date) -> str:
    """A hash of the clean partitions the training set is made of (labels of the window, users and items up to
    its end): a window re-validated to the same rows keeps its fingerprint."""
    digest = hashlib.sha256()
    for table, first in (("impressions", start), ("users", None), ("items", None)):
        for day in data.partitions(table, layer="clean"):
            if (first is None or day >= first) and day <= end:
                digest.update(f"{table}/{day}".encode())
                digest.update(data.partition_path(table, day, layer="clean").read_bytes())
    return digest.hexdigest()[:16]


def find_trained(settings: Settings, model: str, key: str):
    """The registered version of a finished run with ``training_key`` = ``key``, or None."""
    import mlflow

    use_mlflow_experiment(settings, TRAINING_EXPERIMENT)
    runs = mlflow.search_runs(experiment_names=[TRAINING_EXPERIMENT], output_format="list", max_results=1,
                              filter_string=f"tags.training_key = '{key}' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"])  # fmt: skip
    if not runs:
        return None
    versions = mlflow.MlflowClient().search_model_versions(f"run_id = '{runs[0].info.run_id}'")
    return next((v for v in versions if v.name == catalog_model(model).registered_name), None)


def train_for_run(
    model: str,
    dataset: str,
    start: dt.date,
    end: dt.date,
    model_config: dict | None = None,
    train_config: dict | None = None,
    reuse: bool = True,
    settings: Settings | None = None,
) -> dict:
    """Point-in-time training set for [start, end] from Feast, then :func:`train_model`.

    With ``reuse`` (the default), a version already trained with the same key (model, configs, window and data
    fingerprint) is made ``candidate`` again instead of training a copy: re-running a finished day changes
    nothing in the registry. ``settings``: the environment's when left out.
    """
    settings = settings or get_settings()
    settings.ensure_home()
    data = Store(settings.data_dir, dataset)
    service = catalog_model(model).feature_service
    lineage = {"dataset": dataset, "start": start.isoformat(), "end": end.isoformat(), "feature_service": service,
               "data": data_fingerprint(data, start, end)}  # fmt: skip
    if model not in RANKERS:
        raise ValueError(f"unknown model {model!r}; choose from {sorted(RANKERS)}")
    resolved = RANKERS[model].config_class(**(model_config or {})).model_dump()
    key = training_key(model, resolved, TrainConfig(**(train_config or {})).model_dump(), lineage)
    existing = find_trained(settings, model, key) if reuse else None
    if existing is not None:
        import mlflow

        client = mlflow.MlflowClient()
        client.set_registered_model_alias(existing.name, "candidate", existing.version)
        log.info("%s v%s was trained with key %s: reused as candidate", existing.name, existing.version, key)
        metrics = client.get_run(existing.run_id).data.metrics
        final = {k.removeprefix("final_"): v for k, v in metrics.items() if k.startswith("final_")}
        return {"model": model, "run_id": existing.run_id, "registered_model": existing.name,
                "version": str(existing.version), "reused": True, "training_key": key, "metrics": final}  # fmt: skip
    store = get_store(settings, dataset)
    # only what the model reads (the encoder's columns): the keyword and category lists stay out of memory
    features = [f for view in view_joins(store, service) for f in view.features if f in INPUT_COLUMNS]
    frames = [build_training_set(store, data, start, end, service, features)]
    summary = {"rows": int(len(frames[0])), "positive_rate": float(np.mean(frames[0]["click"]))}
    result = train_model(settings, model, frames.pop(), model_config, train_config, lineage)  # frees it once encoded
    return result | summary | {"reused": False, "training_key": key}
