"""
### materialize_features

Runs when `validate_logs` emits the `coldstart_clean_logs` Asset (or when triggered with a `date`):

1. `compute_features`: daily aggregates and feature snapshots of the day from its clean partitions (DuckDB);
2. `feast_apply`: `feast plan`, refusing a plan that deletes registered objects unless `allow_destructive`,
   then `feast apply`;
3. `materialize`: loads the day's snapshots into the online store over the data interval plus a one-day
   overlap for late data, then emits the `coldstart_features` Asset that training is scheduled on.

Params: `date` (defaults to the day named by the triggering Asset event, else the logical date), `dataset`,
`allow_destructive`. CLI twin: `coldstart features`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, Param, dag, get_current_context, task

from pipelines.orchestration import run_day

CLEAN_LOGS = Asset("coldstart_clean_logs")
FEATURES = Asset("coldstart_features")


@dag(
    dag_id="materialize_features",
    schedule=[CLEAN_LOGS],
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["coldstart", "features", "feast"],
    default_args={"retries": 2, "retry_delay": dt.timedelta(seconds=30), "owner": "ml-platform"},
    params={
        "date": Param(None, type=["null", "string"], format="date", description="Day to featurize (YYYY-MM-DD)."),
        "dataset": Param("sim", type="string", pattern="^[a-z0-9_]+$", description="Dataset under data/."),
        "allow_destructive": Param(False, type="boolean", description="Allow a Feast plan that deletes objects."),
    },
    doc_md=__doc__,
)
def materialize_features() -> None:
    @task
    def compute_features() -> dict:
        """Aggregates and snapshots of the day (idempotent: the day's files are replaced)."""
        from pipelines.features.api import compute_for_run

        dataset, day = run_day(get_current_context())
        return compute_for_run(dataset, day)

    @task
    def feast_apply(_: dict) -> dict:
        """`feast plan` then `feast apply`; fails on an unexpected destructive change."""
        from pipelines.features.api import apply_for_run

        context = get_current_context()
        dataset, _day = run_day(context)
        return apply_for_run(dataset, bool(context["params"]["allow_destructive"]))

    @task(outlets=[FEATURES])
    def materialize(_: dict) -> dict:
        """Online store over the data interval plus overlap; announces the day downstream."""
        from pipelines.features.api import materialize_for_run

        context = get_current_context()
        dataset, day = run_day(context)
        window = materialize_for_run(dataset, day)
        context["outlet_events"][FEATURES].extra = {"dataset": dataset, "date": day.isoformat()}
        return window

    materialize(feast_apply(compute_features()))


materialize_features()
