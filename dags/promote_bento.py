"""
### promote_bento

Runs when `evaluate_models` emits the `coldstart_approved_models` Asset (a gate pass), or by hand. For each
approved model: imports the version from the MLflow registry into the BentoML model store (with the side data
its service needs), builds the bento offline (`bentoml build`), waits (up to 30 minutes) for the online store
to hold the newest clean day (a ranker; materialization runs beside training), catches the near-line state up on
the newest clean days (a ranker; the near-line writer replays the logs after its watermark), starts it with
`bentoml serve` on 127.0.0.1, runs the smoke test (golden requests, cold users and items, bad input, a request
without the API token; with a champion two-tower, `/recommend` for a user with history, a new user, and a new
user asked for an item published after the recall indexes `train_models` built, which reaches them near-line),
and only then points the MLflow aliases `staging` and `champion` at the version and records the bento tag
(`COLDSTART_HOME/serving/<model>.json`). Any failure fails the task and leaves the previous staging in place.

Params: `models` (default: those the triggering gate approved), `version` (default: the `approved` alias).
CLI twins: `coldstart promote`, `coldstart rollback`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, Param, dag, get_current_context, task

from pipelines.catalog import models as catalog_models
from pipelines.orchestration import chain_params, default_args, run_models

APPROVED = Asset("coldstart_approved_models")
STAGING = Asset("coldstart_staging_bentos")


@dag(
    dag_id="promote_bento",
    schedule=[APPROVED],
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["coldstart", "serving", "bentoml", "staging"],
    default_args=default_args(),
    params={
        "models": Param(
            ["esmm"],
            type="array",
            items={"type": "string", "enum": catalog_models(hook="evaluate")},
            description="Models to promote (default: those the triggering gate approved).",
        ),
        "version": Param(None, type=["null", "string"], description="A version to promote (default: `approved`)."),
    },
    doc_md=__doc__,
)
def promote_bento() -> None:
    @task
    def chosen() -> list[str]:
        """The models of the triggering gate passes, else the `models` Param."""
        return run_models(get_current_context())

    @task(outlets=[STAGING], max_active_tis_per_dag=1)
    def promote(model: str) -> dict:
        """Import, build, serve, smoke-test; then alias `staging` (the previous staging stays on any failure)."""
        from pipelines.serving.promote import promote as promote_model
        from pipelines.settings import get_settings

        context = get_current_context()
        settings = get_settings()
        settings.ensure_home()
        record = promote_model(settings, model, chain_params(context)["version"])
        context["outlet_events"][STAGING].extra = {"model": model, "version": record["version"],
                                                   "bento": record["bento"]}  # fmt: skip
        return record

    promote.expand(model=chosen())


promote_bento()
