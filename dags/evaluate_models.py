"""
### evaluate_models

Runs when `train_models` emits the `coldstart_candidate_models` Asset (or by hand). For each model it scores the
registered `candidate`, and the current `champion` when there is one, on held-out data: rankers on the clean
days right after their training window (point-in-time features from Feast), MeLU on MovieLens-1M's four
scenarios. Metrics per cold-start slice (new/warm user × new/warm item, exposure buckets, custom expressions)
with bootstrap intervals, and the gap to the simulator's true probabilities, go into an HTML + JSON report
logged to an MLflow run in `coldstart_evaluation`.

Each version is scored through the ranker bento's own code (`RankerCore.score_frame`, with the policies it serves
and its known-items table as of the version's training end), so new items are scored on content-kNN rows as served
(neighbours in the champion content tower's space when there is one, else the raw content vectors; the report's
scoring info says which).

`promotion_gate` then applies the gate: overall and every cold slice must not regress beyond tolerance against the
champion (absolute floors, on cold slices too, when there is none), and every cold slice must have been judged by at
least one check unless `allow_skipped_cold_checks`; the report lists per cold slice the checks that ran. A pass
tags the version `gate=passed`, points the alias `approved` at it and emits the `coldstart_approved_models` Asset
that `promote_bento` is scheduled on; a block fails the `promotion_gate` task (no retries) with the reasons in its
log, and tags the version `gate=blocked`.

Params: `models`, `dataset`, `start` / `end` (default: the `eval_days` days after training), slice definitions,
tolerances, floors, `checks` and `allow_skipped_cold_checks` (null = the model's defaults), `policies`,
`n_bootstrap`, `chain`. CLI twin: `coldstart evaluate`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, Param, dag, get_current_context, task

from pipelines.catalog import models as catalog_models
from pipelines.evaluation.config import EvaluationConfig, SliceConfig
from pipelines.orchestration import chain_extra, chain_params, default, default_args, run_models

CANDIDATES = Asset("coldstart_candidate_models")
APPROVED = Asset("coldstart_approved_models")


def _config(params: dict) -> dict:
    """EvaluationConfig from the trigger form (null = default)."""
    slices = {
        "user_new_by": params["user_new_by"],
        "user_new_below": params["user_new_below"],
        "item_new_by": params["item_new_by"],
        "item_new_below": params["item_new_below"],
        "exposure_edges": params["exposure_edges"],
        "custom": params["custom_slices"],
    }
    gate_keys = ("overall_tolerance", "cold_tolerance", "floors", "checks", "min_count", "allow_skipped_cold_checks")
    return {
        "slices": slices,
        "gate": {k: params[k] for k in gate_keys if params.get(k) is not None},
        "n_bootstrap": params["n_bootstrap"],
        "eval_days": params["eval_days"],
        "max_users": params["max_users"],
        "policies": params["policies"],
    }


@dag(
    dag_id="evaluate_models",
    schedule=[CANDIDATES],
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["coldstart", "evaluation", "gate", "mlflow"],
    default_args=default_args(),
    params={
        "models": Param(
            ["esmm", "ple"],
            type="array",
            items={"type": "string", "enum": catalog_models(hook="evaluate")},
            description="Models whose candidate to evaluate (default: those the triggering run trained).",
        ),
        "dataset": Param("sim", type="string", pattern="^[a-z0-9_]+$"),
        "start": Param(None, type=["null", "string"], format="date", description="First held-out day."),
        "end": Param(None, type=["null", "string"], format="date", description="Last held-out day."),
        "eval_days": Param(
            default(EvaluationConfig, "eval_days"),
            type="integer",
            minimum=1,
            description="Held-out days after training, if no window.",
        ),
        "user_new_by": Param(default(SliceConfig, "user_new_by"), enum=["days_since_signup", "interactions"]),
        "user_new_below": Param(
            default(SliceConfig, "user_new_below"),
            type="number",
            exclusiveMinimum=0,
            description="A user is new below this.",
        ),
        "item_new_by": Param(default(SliceConfig, "item_new_by"), enum=["age_hours", "exposures"]),
        "item_new_below": Param(
            default(SliceConfig, "item_new_below"),
            type="number",
            exclusiveMinimum=0,
            description="An item is new below this.",
        ),
        "exposure_edges": Param(
            list(default(SliceConfig, "exposure_edges")),
            type="array",
            items={"type": "number", "exclusiveMinimum": 0},
            minItems=1,
            description="Cuts of item exposures into buckets (one cut: low / high).",
        ),
        "custom_slices": Param(
            default(SliceConfig, "custom"),
            type="object",
            description="name -> boolean pandas expression over the evaluation frame.",
        ),
        "overall_tolerance": Param(None, type=["null", "number"], minimum=0, description="Null: model default."),
        "cold_tolerance": Param(None, type=["null", "number"], minimum=0, description="Null: model default."),
        "floors": Param(None, type=["null", "object"], description='e.g. {"ctr:auc": 0.55}; used with no champion.'),
        "checks": Param(None, type=["null", "array"], items={"type": "string"}, description='e.g. ["ctr:auc"].'),
        "min_count": Param(None, type=["null", "integer"], minimum=1, description="Smaller cold slices are skipped."),
        "allow_skipped_cold_checks": Param(
            None,
            type=["null", "boolean"],
            description="Pass even when a cold slice had no check that could run (too small, not computable). "
            "Null: the model's default (false: such a slice blocks the gate).",
        ),
        "policies": Param(
            default(EvaluationConfig, "policies"),
            type="object",
            description='Rankers: serving-policy overrides to score with, e.g. {"new_item_embedding": "default"} '
            "({}: what the ranker bento serves).",
        ),
        "n_bootstrap": Param(
            default(EvaluationConfig, "n_bootstrap"),
            type="integer",
            minimum=0,
            description="Bootstrap resamples for the intervals.",
        ),
        "max_users": Param(None, type=["null", "integer"], minimum=1, description="MeLU: users per scenario."),
        "chain": Param(
            {}, type="object", description='Params of the DAGs downstream, by DAG id: {"train_models": {"epochs": 1}}.'
        ),
    },  # fmt: skip
    doc_md=__doc__,
)
def evaluate_models() -> None:
    @task
    def chosen() -> list[str]:
        """The models of the triggering training run, else the `models` Param."""
        return run_models(get_current_context())

    @task(max_active_tis_per_dag=1)
    def evaluate(model: str) -> dict:
        """Score candidate and champion per slice, write the report, log the MLflow run, record the gate."""
        from pipelines.evaluation.api import evaluate_for_run

        p = chain_params(get_current_context())
        start = dt.date.fromisoformat(p["start"]) if p["start"] else None
        end = dt.date.fromisoformat(p["end"]) if p["end"] else None
        return evaluate_for_run(model, p["dataset"], start, end, _config(p))

    @task(outlets=[APPROVED], retries=0)
    def promotion_gate(outcome: dict) -> dict:
        """Fail (by design, no retry) when the gate blocked the candidate; else announce it for promotion."""
        from airflow.sdk.exceptions import AirflowFailException

        if not outcome["passed"]:
            reasons = "\n  - ".join(outcome["reasons"])
            raise AirflowFailException(
                f"gate blocked {outcome['model']} v{outcome['version']} (champion v{outcome['champion_version']}):"
                f"\n  - {reasons}\nreport: {outcome['report']}"
            )
        context = get_current_context()
        extra = {"model": outcome["model"], "version": str(outcome["version"]), "run_id": outcome["run_id"]}
        context["outlet_events"][APPROVED].extra = extra | chain_extra(context)
        return outcome

    promotion_gate.expand(outcome=evaluate.expand(model=chosen()))


evaluate_models()
