"""``coldstart validate``: the GX suites over raw logs, rows to clean/ or quarantine/."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from pipelines.cli._common import _clear_errors, _print_summary, _settings, app


@app.command()
@_clear_errors
def validate(
    date: Annotated[
        list[dt.datetime] | None, typer.Option(formats=["%Y-%m-%d"], help="Day(s) to validate; default: all raw days.")
    ] = None,
    threshold: Annotated[float, typer.Option(min=0, max=1, help="Max quarantined share before failing.")] = 0.05,
    dataset: Annotated[str, typer.Option(help="Dataset under COLDSTART_HOME/data.")] = "sim",
) -> None:
    """Validate raw logs with the GX suites: rows to clean/ or quarantine/, a JSON summary per day."""
    from pipelines.data.contract import Store
    from pipelines.validation.api import enforce_threshold, validate_for_run

    settings = _settings()
    days = [d.date() for d in date] if date else Store(settings.data_dir, dataset).partitions("impressions")
    if not days:
        raise typer.BadParameter(f"dataset {dataset!r} has no raw impressions: run `coldstart simulate` first")
    for day in days:
        summary = validate_for_run(dataset, day, threshold)
        rules = {rule: n for t in summary["tables"].values() for rule, n in t["failed_by_rule"].items()}
        _print_summary(
            f"Validated {dataset} {day}",
            {
                "rows in": summary["rows_in"],
                "clean": summary["clean"],
                "quarantined": f"{summary['quarantined']} ({summary['quarantined_share']:.4%})",
                **{f"rule {rule}": n for rule, n in rules.items()},
                "summary": str(settings.reports_dir / "validation" / dataset / f"{day}.json"),
            },
        )
        enforce_threshold(summary)
