"""
### materialize_features

Runs when `validate_logs` emits the `coldstart_clean_logs` Asset (or when triggered with a `date`, and `end`
for a range), for every day the triggering events name, oldest first:

1. `compute_features`: daily aggregates and feature snapshots of each day from its clean partitions (DuckDB);
2. `feast_apply`: `feast plan`, refusing a plan that deletes registered objects unless `allow_destructive`,
   then `feast apply`; emits the `coldstart_offline_features` Asset that training is scheduled on: point-in-time
   training sets read the snapshot files through the registry's definitions, not the online store;
3. `materialize`: loads the snapshots into the online store from the oldest day (minus a one-day overlap for
   late data) to the newest snapshot, while training runs, then emits the `coldstart_features` Asset (the
   online store is fresh: for serving and for teams reading features by id).

Re-running a day rewrites the same files and leaves the online store as it was.

Params: `date` / `end` (default: the days named by the triggering Asset events, else the logical date),
`dataset`, `allow_destructive`, `chain`. CLI twin: `coldstart features`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, Param, dag, get_current_context, task

from pipelines.orchestration import chain_extra, chain_params, day_event, default_args, run_days

CLEAN_LOGS = Asset("coldstart_clean_logs")
OFFLINE_FEATURES = Asset("coldstart_offline_features")
FEATURES = Asset("coldstart_features")


@dag(
    dag_id="materialize_features",
    schedule=[CLEAN_LOGS],
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["coldstart", "features", "feast"],
    default_args=default_args(),
    params={
        "date": Param(None, type=["null", "string"], format="date", description="Day to featurize (YYYY-MM-DD)."),
        "end": Param(None, type=["null", "string"], format="date", description="Last day of a range from `date`."),
        "dataset": Param("sim", type="string", pattern="^[a-z0-9_]+$", description="Dataset under data/."),
        "allow_destructive": Param(False, type="boolean", description="Allow a Feast plan that deletes objects."),
        "chain": Param(
            {}, type="object", description='Params of the DAGs downstream, by DAG id: {"train_models": {"epochs": 1}}.'
        ),
    },
    doc_md=__doc__,
)
def materialize_features() -> None:
    @task
    def compute_features() -> list[dict]:
        """Aggregates and snapshots of each day, oldest first (idempotent: each day's files are replaced)."""
        from pipelines.features.api import compute_for_run

        dataset, days = run_days(get_current_context())
        return [compute_for_run(dataset, day) for day in days]

    @task(outlets=[OFFLINE_FEATURES])
    def feast_apply(_: list[dict]) -> dict:
        """`feast plan` then `feast apply`; fails on an unexpected destructive change; announces the days."""
        from pipelines.features.api import apply_for_run

        context = get_current_context()
        dataset, days = run_days(context)
        changes = apply_for_run(dataset, bool(chain_params(context)["allow_destructive"]))
        # Training reads only the snapshot files and the registry: it starts now, beside the materialization.
        context["outlet_events"][OFFLINE_FEATURES].extra = day_event(dataset, days) | chain_extra(context)
        return changes

    @task(outlets=[FEATURES])
    def materialize(_: dict) -> dict:
        """Online store from the oldest day (with overlap) to the newest snapshot; announces the days."""
        from pipelines.features.api import materialize_for_run

        context = get_current_context()
        dataset, days = run_days(context)
        # The window runs to the newest snapshot computed so far: the oldest day covers every later one.
        window = materialize_for_run(dataset, days[0])
        context["outlet_events"][FEATURES].extra = day_event(dataset, days) | chain_extra(context)
        return window

    materialize(feast_apply(compute_features()))


materialize_features()
