"""
### train_models

Runs when `materialize_features` emits the `coldstart_offline_features` Asset, once the day's snapshots are
computed and applied (it trains while the online store is being loaded), or by hand. The window ends
`holdout_days` before the newest day named by the triggering event (or the `date` Param), so that the days
after it are left for `evaluate_models`, and spans `window_days` (clipped to the first clean day). For each
model chosen in the trigger form it builds the point-in-time training set of the window from Feast (the model's
versioned feature service), trains with a time split (the last day validates), logs one MLflow run (params,
resolved config, per-epoch metrics, feature service, data interval and fingerprint) and registers a new version
with alias `candidate`, which emits the `coldstart_candidate_models` Asset. A killed task resumes from its last
epoch checkpoint on retry.

Idempotent: a version already trained with the same model, configs, window and data is made `candidate` again
instead of training a copy (set `retrain` to train anyway).

Params: `models`, `date`, `holdout_days`, `window_days`, `dataset`, `epochs`, `batch_size`, `lr`, `poso`, `uie`,
`model_config` (per-model overrides, e.g. `{"ple": {"levels": 3}}`), `retrain`, `chain`. CLI twin:
`coldstart train`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, Param, dag, get_current_context, task

from pipelines.catalog import models as catalog_models
from pipelines.orchestration import chain_extra, chain_params, default, default_args, run_day
from pipelines.training.config import TrainConfig, TrainRequest

OFFLINE_FEATURES = Asset("coldstart_offline_features")
MODELS = Asset("coldstart_candidate_models")


@dag(
    dag_id="train_models",
    schedule=[OFFLINE_FEATURES],
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["coldstart", "training", "mlflow"],
    default_args=default_args(),
    params={
        "models": Param(
            ["esmm", "ple"],
            type="array",
            items={"type": "string", "enum": catalog_models()},
            description="Models to train, one task each.",
        ),
        "date": Param(None, type=["null", "string"], format="date", description="Newest day (default: the event's)."),
        "holdout_days": Param(1, type="integer", minimum=0, description="Days after the window left for evaluation."),
        "window_days": Param(
            default(TrainRequest, "window_days"),
            type="integer",
            minimum=2,
            description="Days in the window (last = validation).",
        ),
        "dataset": Param(default(TrainRequest, "dataset"), type="string", pattern="^[a-z0-9_]+$"),
        "epochs": Param(default(TrainConfig, "epochs"), type="integer", minimum=1),
        "batch_size": Param(default(TrainConfig, "batch_size"), type="integer", minimum=32),
        "lr": Param(default(TrainConfig, "lr"), type="number", exclusiveMinimum=0),
        "poso": Param(
            default(TrainRequest, "poso"), type="boolean", description="POSO gates on every model that supports them."
        ),
        "uie": Param(default(TrainRequest, "uie"), type="boolean", description="UIE enhancement on PLE."),
        "model_config": Param({}, type="object", description='Per-model config overrides: {"ple": {...}}.'),
        "retrain": Param(
            not default(TrainRequest, "reuse"), type="boolean", description="Train even if this exact version exists."
        ),
        "chain": Param(
            {}, type="object", description='Params of the DAGs downstream, by DAG id: {"train_models": {"epochs": 1}}.'
        ),
    },  # fmt: skip
    doc_md=__doc__,
)
def train_models() -> None:
    @task
    def chosen() -> list[str]:
        return list(chain_params(get_current_context())["models"])

    @task(outlets=[MODELS], max_active_tis_per_dag=1)
    def train(model: str) -> dict:
        """Train, log and register one model as its family does (a ranker resumes from its checkpoint on retry)."""
        from pipelines.catalog import model as catalog_model
        from pipelines.training.api import train as train_model

        context = get_current_context()
        p = chain_params(context)
        window: dict = {"dataset": p["dataset"]}
        if catalog_model(model).family.trains_on_window:  # a window of the run's days, `holdout_days` before
            dataset, day = run_day(context)
            end = day - dt.timedelta(days=int(p["holdout_days"]))
            window = {"dataset": dataset, "end": end, "window_days": int(p["window_days"])}
        request = TrainRequest(**window, train={"epochs": p["epochs"], "batch_size": p["batch_size"], "lr": p["lr"]},
                               poso=p["poso"], uie=p["uie"], overrides=p["model_config"].get(model, {}),
                               reuse=not p["retrain"])  # fmt: skip
        result = train_model(model, request)
        extra = {"model": model, "version": str(result["version"])}
        context["outlet_events"][MODELS].extra = extra | chain_extra(context)
        return result

    train.expand(model=chosen())


train_models()
