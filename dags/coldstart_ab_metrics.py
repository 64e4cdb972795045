"""
### coldstart_ab_metrics

Reads out a cold-start experiment (a new-item boost, say) over a window of days, from the experiment
assignments, impressions and publishes:

* author side: publish penetration, posts per DAU, time to a new item's first exposure, share of new items
  reaching their exposure target within 24 h;
* consumer side: new-item CTR and interaction rate for high- and low-exposure new items, overall CTR, dwell
  and impressions per DAU, DAU;
* content side: share of new items that become hot.

Treatment vs control with delta-method confidence intervals (bootstrap as a check), p-values, a sample-ratio
check and the design stated with a warning about interference between the groups. The HTML report (with daily
lift plots) and JSON go to `COLDSTART_HOME/reports/ab/...` and to their own MLflow run.

Params: `experiment_id`, `start`, `end`, thresholds. CLI twin: `coldstart ab`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, get_current_context, task

from pipelines.orchestration import default_args


@dag(
    dag_id="coldstart_ab_metrics",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["coldstart", "experiments", "ab"],
    default_args=default_args(),
    params={
        "experiment_id": Param("exp_new_item_boost", type="string", description="Experiment to read out."),
        "dataset": Param("sim", type="string", pattern="^[a-z0-9_]+$"),
        "start": Param("2026-01-01", type="string", format="date", description="First day of the window."),
        "end": Param("2026-01-07", type="string", format="date", description="Last day of the window."),
        "high_exposure_threshold": Param(1000, type="integer", minimum=1, description="High-exposure new items."),
        "exposure_target": Param(60, type="integer", minimum=1, description="Exposures wanted within 24 h."),
        "hot_clicks": Param(30, type="integer", minimum=1, description="Clicks that make a new item hot."),
        "treatment_share": Param(0.5, type="number", exclusiveMinimum=0, exclusiveMaximum=1),
        "layer": Param("clean", enum=["clean", "raw"], description="Read validated (clean) or raw logs."),
    },
    doc_md=__doc__,
)
def coldstart_ab_metrics() -> None:
    @task
    def readout() -> dict:
        """Metrics, statistics, report and MLflow run; returns the headline comparison."""
        from pipelines.experiments.api import readout_for_run
        from pipelines.experiments.metrics import ReadoutConfig

        p = get_current_context()["params"]
        cfg = ReadoutConfig(
            experiment_id=p["experiment_id"],
            high_exposure_threshold=p["high_exposure_threshold"],
            exposure_target=p["exposure_target"],
            hot_clicks=p["hot_clicks"],
            layer=p["layer"],
        )
        start, end = dt.date.fromisoformat(p["start"]), dt.date.fromisoformat(p["end"])
        result = readout_for_run(p["dataset"], start, end, cfg, float(p["treatment_share"]))
        return {
            "report": result["report"],
            "mlflow_run_id": result["mlflow_run_id"],
            "srm_mismatch": result["srm"]["mismatch"],
            "significant": [name for name, m in result["metrics"].items() if m["significant"]],
        }

    readout()


coldstart_ab_metrics()
