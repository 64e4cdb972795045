"""
### validate_logs

Validates days of raw event logs (users, items, publishes, assignments, impressions) with the Great
Expectations suites in `pipelines/validation/quarantine_rules.py`, oldest first (references are checked against
the clean rows of earlier days). Every raw row ends in `clean/` or `quarantine/` (with the names of the rules it
broke); a JSON summary of rows failed per rule is written to
`COLDSTART_HOME/reports/validation/<dataset>/<date>.json`.

Runs when the log shipper announces landed days (an event on the `coldstart_raw_logs` Asset, with `date` or
`dates` in its extra: `POST /api/v2/assets/events`), or by hand with a `date` (and `end`, for a range).

Table-level problems (schema drift, a missing or empty partition) fail `validate`. If the quarantined share of
a day exceeds the `threshold` Param, `quarantine_gate` fails after every output is written, and the
`coldstart_clean_logs` Asset that downstream DAGs are scheduled on is not emitted; otherwise the event names
the validated days. Re-validating a day rewrites the same partitions.

Params: `date`, `end`, `threshold`, `dataset`, `chain` (Params of the DAGs downstream, handed on through the
Asset events: `{"train_models": {"epochs": 1}}`). CLI twin: `coldstart validate`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, Param, dag, get_current_context, task

from pipelines.orchestration import chain_extra, chain_params, day_event, default_args, run_days

RAW_LOGS = Asset("coldstart_raw_logs")
CLEAN_LOGS = Asset("coldstart_clean_logs")


@dag(
    dag_id="validate_logs",
    schedule=[RAW_LOGS],
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["coldstart", "data-quality"],
    default_args=default_args(),
    params={
        "date": Param(None, type=["null", "string"], format="date", description="Day to validate (YYYY-MM-DD)."),
        "end": Param(None, type=["null", "string"], format="date", description="Last day of a range from `date`."),
        "threshold": Param(0.05, type="number", minimum=0, maximum=1, description="Max quarantined share."),
        "dataset": Param("sim", type="string", pattern="^[a-z0-9_]+$", description="Dataset under data/."),
        "chain": Param(
            {}, type="object", description='Params of the DAGs downstream, by DAG id: {"train_models": {"epochs": 1}}.'
        ),
    },
    doc_md=__doc__,
)
def validate_logs() -> None:
    @task
    def validate() -> list[dict]:
        """Route every raw row of each day to clean/ or quarantine/ and write the summaries (never fails on the
        share)."""
        from pipelines.validation.api import validate_for_run

        context = get_current_context()
        dataset, days = run_days(context)
        return [validate_for_run(dataset, day, float(chain_params(context)["threshold"])) for day in days]

    @task(outlets=[CLEAN_LOGS], retries=0)
    def quarantine_gate(summaries: list[dict]) -> None:
        """Fail (without retries) when a day quarantined too many rows; otherwise emit the clean Asset."""
        from pipelines.validation.api import enforce_threshold

        for summary in summaries:
            enforce_threshold(summary)
        context = get_current_context()
        days = [dt.date.fromisoformat(s["date"]) for s in summaries]
        extra = day_event(summaries[0]["dataset"], days) | chain_extra(context)
        context["outlet_events"][CLEAN_LOGS].extra = extra

    quarantine_gate(validate())


validate_logs()
