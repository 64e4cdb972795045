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
`model_config` (per-model overrides, e.g. `{"melu": {"meta_lr": 0.0005}}`), `retrain`, `chain`. CLI twin:
`coldstart train`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, Param, dag, get_current_context, task

from pipelines.orchestration import chain_extra, chain_params, default_args, run_day

OFFLINE_FEATURES = Asset("coldstart_offline_features")
MODELS = Asset("coldstart_candidate_models")
CHOICES = ["esmm", "ple", "mmoe", "shared_bottom", "base", "melu"]


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
            items={"type": "string", "enum": CHOICES},
            description="Models to train, one task each.",
        ),
        "date": Param(None, type=["null", "string"], format="date", description="Newest day (default: the event's)."),
        "holdout_days": Param(1, type="integer", minimum=0, description="Days after the window left for evaluation."),
        "window_days": Param(7, type="integer", minimum=2, description="Days in the window (last = validation)."),
        "dataset": Param("sim", type="string", pattern="^[a-z0-9_]+$"),
        "epochs": Param(3, type="integer", minimum=1),
        "batch_size": Param(1024, type="integer", minimum=32),
        "lr": Param(0.001, type="number", exclusiveMinimum=0),
        "poso": Param(False, type="boolean", description="POSO gates on every model that supports them."),
        "uie": Param(True, type="boolean", description="UIE enhancement on PLE."),
        "model_config": Param({}, type="object", description='Per-model config overrides: {"ple": {...}}.'),
        "retrain": Param(False, type="boolean", description="Train even if this exact version exists."),
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
        """Train, log and register one model (resumes from its checkpoint on retry)."""
        from pipelines.training.api import train_for_run, training_window

        context = get_current_context()
        p = chain_params(context)
        overrides = dict(p["model_config"].get(model, {}))
        if model == "melu":  # meta-learned on MovieLens-1M's MeLU split, not on the window's impressions
            from pipelines.models.melu import MeLUConfig
            from pipelines.settings import get_settings
            from pipelines.training.meta import train_melu

            result = train_melu(get_settings(), MeLUConfig(**overrides), epochs=int(p["epochs"]))
            context["outlet_events"][MODELS].extra = {"model": model, "version": str(result["version"])} | chain_extra(
                context
            )
            return result
        from pipelines.data.contract import Store
        from pipelines.settings import get_settings

        dataset, day = run_day(context)
        data = Store(get_settings().data_dir, dataset)
        start, end = training_window(data, day - dt.timedelta(days=int(p["holdout_days"])), int(p["window_days"]))
        model_config: dict = {"poso": bool(p["poso"])}
        if model == "ple" and p["uie"]:
            model_config["uie"] = {}
        train_config = {"epochs": p["epochs"], "batch_size": p["batch_size"], "lr": p["lr"]}
        result = train_for_run(model, dataset, start, end, model_config | overrides, train_config,
                               reuse=not p["retrain"])  # fmt: skip
        context["outlet_events"][MODELS].extra = {"model": model, "version": str(result["version"])} | chain_extra(
            context
        )
        return result

    train.expand(model=chosen())


train_models()
