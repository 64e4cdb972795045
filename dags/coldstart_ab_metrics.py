"""
### coldstart_ab_metrics

Reads out a cold-start experiment (a new-item boost, say) over a window of days, from the experiment
assignments, impressions and publishes:

* author side: publish penetration, posts per DAU, time to a new item's first exposure (restricted mean, never
  exposed items kept), share of new items reaching their exposure target within 24 h;
* consumer side: new-item CTR and interaction rate for high- and low-exposure new items, overall CTR, dwell
  and impressions per DAU, DAU (in an author split: per impression of the author's items);
* content side: share of new items that become hot.

Item metrics count only matured items (their 24 h / hot window ended within the logs read; `follow_up_days`
lets them read later days). Primary metrics and guardrails are named (`primary`, `guardrails`); p-values are
adjusted over the family (`correction`: Holm or Benjamini-Hochberg); daily lifts are descriptive unless
`correct_daily`. Delta-method intervals (bootstrap as a check), optional CUPED (`cuped_pre_days`), a
sample-ratio check on assigned units, and the design's four interference questions answered. The HTML report
(with daily lift plots) and JSON go to `COLDSTART_HOME/reports/ab/...` and to their own MLflow run.

Params: `experiment_id`, `start`, `end`, thresholds, roles and statistics. CLI twin: `coldstart ab`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, get_current_context, task

from pipelines.experiments.config import ReadoutConfig
from pipelines.experiments.definitions import METRIC_NAMES
from pipelines.orchestration import default, default_args

_NAMES = {"type": "string", "enum": sorted(METRIC_NAMES)}


def _describe(name: str) -> str:
    return ReadoutConfig.model_fields[name].description or name


@dag(
    dag_id="coldstart_ab_metrics",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["coldstart", "experiments", "ab"],
    default_args=default_args(),
    params={
        "experiment_id": Param(default(ReadoutConfig, "experiment_id"), type="string", description="Experiment."),
        "dataset": Param("sim", type="string", pattern="^[a-z0-9_]+$"),
        "start": Param("2026-01-01", type="string", format="date", description="First day of the window."),
        "end": Param("2026-01-07", type="string", format="date", description="Last day of the window."),
        "treatment_share": Param(0.5, type="number", exclusiveMinimum=0, exclusiveMaximum=1),
        **{
            name: Param(default(ReadoutConfig, name), type="integer", minimum=minimum, description=_describe(name))
            for name, minimum in (
                ("new_item_hours", 1),
                ("high_exposure_threshold", 1),
                ("exposure_target", 1),
                ("hot_clicks", 1),
                ("hot_days", 1),
                ("first_exposure_cap_hours", 1),
                ("follow_up_days", 0),
                ("cuped_pre_days", 0),
            )
        },
        "primary": Param(
            list(default(ReadoutConfig, "primary")), type="array", items=_NAMES, description=_describe("primary")
        ),
        "guardrails": Param(
            list(default(ReadoutConfig, "guardrails")), type="array", items=_NAMES, description=_describe("guardrails")
        ),
        "correction": Param(
            default(ReadoutConfig, "correction"), enum=["holm", "bh"], description=_describe("correction")
        ),
        "family": Param(default(ReadoutConfig, "family"), enum=["all", "roles"], description=_describe("family")),
        "correct_daily": Param(
            default(ReadoutConfig, "correct_daily"), type="boolean", description=_describe("correct_daily")
        ),
        "alpha": Param(default(ReadoutConfig, "alpha"), type="number", exclusiveMinimum=0, exclusiveMaximum=1),
        "layer": Param("clean", enum=["clean", "raw"], description="Read validated (clean) or raw logs."),
    },
    doc_md=__doc__,
)
def coldstart_ab_metrics() -> None:
    @task
    def readout() -> dict:
        """Metrics, statistics, report and MLflow run; returns the headline comparison."""
        from pipelines.experiments.api import readout_for_run

        p = get_current_context()["params"]
        cfg = ReadoutConfig(**{k: v for k, v in p.items() if k in ReadoutConfig.model_fields})
        start, end = dt.date.fromisoformat(p["start"]), dt.date.fromisoformat(p["end"])
        result = readout_for_run(p["dataset"], start, end, cfg, float(p["treatment_share"]))
        return {
            "report": result["report"],
            "mlflow_run_id": result["mlflow_run_id"],
            "srm_mismatch": result["srm"]["mismatch"],
            "significant": [name for name, m in result["metrics"].items() if m["significant"]],
            "primary_p_adjusted": {
                name: m["p_adjusted"] if m["p_adjusted"] == m["p_adjusted"] else None
                for name, m in result["metrics"].items()
                if m["role"] == "primary"
            },
        }

    readout()


coldstart_ab_metrics()
