"""
### validate_logs

Validates one day of raw event logs (users, items, publishes, assignments, impressions) with the Great
Expectations suites in `pipelines/validation/suites.py`. Every raw row ends in `clean/` or `quarantine/`
(with the names of the rules it broke); a JSON summary of rows failed per rule is written to
`COLDSTART_HOME/reports/validation/<dataset>/<date>.json`.

Table-level problems (schema drift, a missing or empty partition) fail `validate`. If the quarantined share
exceeds the `threshold` Param, `quarantine_gate` fails after both outputs are written, and the
`coldstart_clean_logs` Asset that downstream DAGs are scheduled on is not emitted.

Params: `date` (defaults to the run's logical date), `threshold`, `dataset`. CLI twin: `coldstart validate`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, Param, dag, get_current_context, task

from pipelines.orchestration import run_day

CLEAN_LOGS = Asset("coldstart_clean_logs")


@dag(
    dag_id="validate_logs",
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["coldstart", "data-quality"],
    default_args={"retries": 2, "retry_delay": dt.timedelta(seconds=30), "owner": "ml-platform"},
    params={
        "date": Param(None, type=["null", "string"], format="date", description="Day to validate (YYYY-MM-DD)."),
        "threshold": Param(0.05, type="number", minimum=0, maximum=1, description="Max quarantined share."),
        "dataset": Param("sim", type="string", pattern="^[a-z0-9_]+$", description="Dataset under data/."),
    },
    doc_md=__doc__,
)
def validate_logs() -> None:
    @task
    def validate() -> dict:
        """Route every raw row to clean/ or quarantine/ and write the summary (never fails on the share)."""
        from pipelines.validation.api import validate_for_run

        context = get_current_context()
        return validate_for_run(*run_day(context), float(context["params"]["threshold"]))

    @task(outlets=[CLEAN_LOGS], retries=0)
    def quarantine_gate(summary: dict) -> None:
        """Fail (without retries) when too many rows were quarantined; otherwise emit the clean Asset."""
        from pipelines.validation.api import enforce_threshold

        enforce_threshold(summary)
        get_current_context()["outlet_events"][CLEAN_LOGS].extra = {
            "dataset": summary["dataset"],
            "date": summary["date"],
        }

    quarantine_gate(validate())


validate_logs()
