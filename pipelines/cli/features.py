"""``coldstart features``: feature snapshots, ``feast apply`` and materialization into the online store."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from pipelines.cli._common import _clear_errors, _print_summary, _settings, app


@app.command()
@_clear_errors
def features(
    date: Annotated[
        list[dt.datetime] | None, typer.Option(formats=["%Y-%m-%d"], help="Day(s); default: every clean day.")
    ] = None,
    dataset: Annotated[str, typer.Option(help="Dataset under COLDSTART_HOME/data.")] = "sim",
    allow_destructive: Annotated[bool, typer.Option(help="Allow a Feast plan that deletes objects.")] = False,
) -> None:
    """Compute feature snapshots (DuckDB), `feast plan` + `feast apply`, and materialize into the online store."""
    from pipelines.data.contract import Store
    from pipelines.features.api import apply_for_run, compute_for_run, materialize_for_run

    settings = _settings()
    days = [d.date() for d in date] if date else Store(settings.data_dir, dataset).partitions("impressions", "clean")
    if not days:
        raise typer.BadParameter(f"dataset {dataset!r} has no clean impressions: run `coldstart validate` first")
    computed = {day: compute_for_run(dataset, day) for day in days}
    changes = apply_for_run(dataset, allow_destructive)
    for day in days:
        window = materialize_for_run(dataset, day)
        rows = computed[day]["rows"]
        _print_summary(
            f"Features {dataset} {day}",
            {**{f"rows {t}": n for t, n in rows.items()}, "materialized": f"{window['start']} .. {window['end']}"},
        )
    _print_summary("Feast plan applied", {k: len(v) for k, v in changes.items()})
