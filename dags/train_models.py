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

Models whose outputs the others read (the content tower, whose vectors the rankers' similar-item init uses)
train first, in a task of their own (`train_upstream`): the tower sets its own `champion` alias when its held-out
triplet accuracy clears a floor, writes every item's vector to Feast, and emits no candidate (it has no bento to
evaluate or promote). Unset `epochs` / `batch_size` / `lr` keep each family's own trainer defaults.

The retrieval model (`two_tower`, a `retrieval` family) trains next, in a task of its own (`train_retrieval`:
it gates itself to `champion` and emits no candidate), then `build_indexes` builds the champion two-tower's
recall indexes over the catalog up to the window's end into `COLDSTART_HOME/retrieval/<dataset>/v<version>/`
(with a `manifest.json`), and only then do the rankers train: each ranker's candidate event starts its
evaluation and promotion, and `promote_bento` packs those indexes into the ranker bento (`/recommend`); the items
published after the window reach them near-line.

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
from pipelines.orchestration import chain_extra, chain_params, default, default_args, training_stage
from pipelines.training.config import TrainRequest

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
        # Null: each family's own trainer default (the rankers' TrainConfig, the content tower's smaller steps).
        "epochs": Param(None, type=["null", "integer"], minimum=1, description="Null: the model's default."),
        "batch_size": Param(None, type=["null", "integer"], minimum=32, description="Null: the model's default."),
        "lr": Param(None, type=["null", "number"], exclusiveMinimum=0, description="Null: the model's default."),
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

    @task
    def first(models: list[str]) -> list[str]:
        return training_stage(models, "first")

    @task
    def retrieval(models: list[str]) -> list[str]:
        return training_stage(models, "retrieval")

    @task
    def rest(models: list[str]) -> list[str]:
        return training_stage(models, "rest")

    @task(max_active_tis_per_dag=1)
    def train_upstream(model: str) -> dict:
        """Train a model the others read; it sets its own alias and emits no candidate (it has no bento)."""
        from pipelines.orchestration import train_request
        from pipelines.training.api import train as train_model

        return train_model(model, train_request(get_current_context(), model))

    # All-done, not all-success: an empty `first` list skips `train_upstream`, and a failed tower (the rankers
    # then serve new items on raw content neighbours) must not hold back the rankers of the run.
    @task(outlets=[MODELS], max_active_tis_per_dag=1, trigger_rule="all_done")
    def train(model: str) -> dict:
        """Train, log and register one model as its family does (a ranker resumes from its checkpoint on retry)."""
        from pipelines.orchestration import train_request
        from pipelines.training.api import train as train_model

        context = get_current_context()
        result = train_model(model, train_request(context, model))
        extra = {"model": model, "version": str(result["version"])}
        context["outlet_events"][MODELS].extra = extra | chain_extra(context)
        return result

    # All-done: a failed two-tower leaves the previous champion's indexes to build, and the rankers still train.
    @task(trigger_rule="all_done")
    def build_indexes(models: list[str]) -> dict:
        """Build the champion two-tower's recall indexes as of the window's end, when the run trained it."""
        if "two_tower" not in models:
            return {"skipped": "two_tower was not among the models of this run"}
        from pipelines.orchestration import train_request
        from pipelines.retrieval.build import build_indexes as build
        from pipelines.settings import get_settings

        request = train_request(get_current_context(), "two_tower")
        return build(get_settings(), request.dataset, until=request.end) or {"skipped": "no two_tower@champion"}

    models = chosen()
    upstream = train_upstream.expand(model=first(models))
    # The same task body for the retrieval models (self-gating, no candidate), after the tower whose vectors it
    # reads; all-done: a failed tower leaves the two-tower on the raw content vectors.
    retrieved = train_upstream.override(task_id="train_retrieval", trigger_rule="all_done").expand(
        model=retrieval(models)
    )
    upstream >> retrieved >> build_indexes(models) >> train.expand(model=rest(models))


train_models()
