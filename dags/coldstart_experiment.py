"""
### coldstart_experiment

A closed-loop cold-start experiment: the simulated world is fed by the platform's own model and policies.

In an experiment home of its own (`COLDSTART_HOME/experiments/<experiment_id>`, so the platform's datasets and
aliases are untouched): a pre-period under the legacy feed (each day validated and featurized), then the chain's
steps stage a model (Feast apply and materialize, the ranker trained on the pre-period, the gate on its last day;
with `retrieval` = `platform`, the default, also the two-tower retrieval model, gated on recall, and every item
indexed in the recall channels `/recommend` serves), then the experiment period under the platform feed with users
or authors split between the `control` and `treatment` policy configs (guaranteed exposure, fixed boost:
`PolicyConfig` fields), each day validated and materialized so the next is scored on fresh features, and the
readout of `coldstart_ab_metrics` over the experiment period (HTML report under the experiment home).

Params: `experiment_id`, `design`, `treatment_share`, `pre_days`, `days`, `users`, `seed`, `impressions_per_day`,
`candidates`, `recall`, `retrieval`, `recall_k`, `platform_recall`, `two_tower`, `two_tower_margin`, `cuped`,
`model`, `train`, `gate`, `control`, `treatment`. CLI twin: `coldstart experiment`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, get_current_context, task

from pipelines.experiments.closed_loop import ClosedLoopConfig
from pipelines.orchestration import default, default_args


def _describe(name: str) -> str:
    return ClosedLoopConfig.model_fields[name].description or name


@dag(
    dag_id="coldstart_experiment",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["coldstart", "experiments", "closed-loop"],
    default_args=default_args(),
    params={
        "experiment_id": Param(default(ClosedLoopConfig, "experiment_id"), type="string", pattern="^[a-z0-9_]+$"),
        "design": Param(
            default(ClosedLoopConfig, "design"),
            enum=["user_split", "author_split", "balanced_author_split"],
            description=_describe("design"),
        ),
        "treatment_share": Param(
            default(ClosedLoopConfig, "treatment_share"), type="number", exclusiveMinimum=0, exclusiveMaximum=1
        ),
        "pre_days": Param(
            default(ClosedLoopConfig, "pre_days"), type="integer", minimum=3, description=_describe("pre_days")
        ),
        "days": Param(default(ClosedLoopConfig, "days"), type="integer", minimum=1, description=_describe("days")),
        "users": Param(default(ClosedLoopConfig, "users"), type="integer", minimum=100),
        "seed": Param(default(ClosedLoopConfig, "seed"), type="integer"),
        "impressions_per_day": Param(None, type=["null", "integer"], minimum=1, description="Traffic override."),
        "candidates": Param(
            default(ClosedLoopConfig, "candidates"), type="integer", minimum=1, description=_describe("candidates")
        ),
        "recall": Param(
            default(ClosedLoopConfig, "recall"), enum=["popularity", "boost", "random"], description=_describe("recall")
        ),
        "retrieval": Param(
            default(ClosedLoopConfig, "retrieval"), enum=["platform", "simulator"], description=_describe("retrieval")
        ),
        "recall_k": Param(
            default(ClosedLoopConfig, "recall_k"), type="integer", minimum=1, description=_describe("recall_k")
        ),
        "platform_recall": Param(
            default(ClosedLoopConfig, "platform_recall"), type="object", description=_describe("platform_recall")
        ),
        "two_tower": Param(default(ClosedLoopConfig, "two_tower"), type="object", description=_describe("two_tower")),
        "two_tower_margin": Param(
            default(ClosedLoopConfig, "two_tower_margin"), type="number", description=_describe("two_tower_margin")
        ),
        "cuped": Param(default(ClosedLoopConfig, "cuped"), type="boolean", description=_describe("cuped")),
        "model": Param(default(ClosedLoopConfig, "model"), type="string"),
        "train": Param(default(ClosedLoopConfig, "train"), type="object", description=_describe("train")),
        "content_tower": Param(
            default(ClosedLoopConfig, "content_tower"), type=["null", "object"], description=_describe("content_tower")
        ),
        "gate": Param(default(ClosedLoopConfig, "gate"), type="object", description=_describe("gate")),
        "control": Param(default(ClosedLoopConfig, "control"), type="object", description=_describe("control")),
        "treatment": Param(default(ClosedLoopConfig, "treatment"), type="object", description=_describe("treatment")),
    },  # fmt: skip
    doc_md=__doc__,
)
def coldstart_experiment() -> None:
    @task
    def run() -> dict:
        """Pre-period, staging, experiment period and readout; returns the headline and the report's path.

        A retry starts the experiment afresh in its home (same seed: same pre-period); a gate that blocks the
        staged model fails the task without retries (training again would give the same model).
        """
        from airflow.sdk.exceptions import AirflowFailException

        from pipelines.experiments.closed_loop import ExperimentError, run_closed_loop
        from pipelines.settings import get_settings

        params = get_current_context()["params"]
        cfg = ClosedLoopConfig(**{k: v for k, v in params.items() if k in ClosedLoopConfig.model_fields})
        settings = get_settings()
        settings.ensure_home()
        try:
            return run_closed_loop(settings, cfg)
        except ExperimentError as exc:
            raise AirflowFailException(str(exc)) from exc

    run()


coldstart_experiment()
