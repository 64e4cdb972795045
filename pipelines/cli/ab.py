"""``coldstart ab``: the readout of a cold-start A/B experiment."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.table import Table

from pipelines.cli._common import _clear_errors, _settings, app, console


@app.command()
@_clear_errors
def ab(
    start: Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"], help="First day of the window.")],
    end: Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"], help="Last day of the window.")],
    experiment_id: Annotated[str, typer.Option(help="Experiment to read out.")] = "exp_new_item_boost",
    dataset: Annotated[str, typer.Option()] = "sim",
    high_exposure_threshold: Annotated[int, typer.Option(min=1)] = 1000,
    exposure_target: Annotated[int, typer.Option(min=1)] = 60,
    hot_clicks: Annotated[int, typer.Option(min=1)] = 30,
    treatment_share: Annotated[float, typer.Option(min=0.01, max=0.99)] = 0.5,
    layer: Annotated[str, typer.Option(help="clean or raw logs.")] = "clean",
) -> None:
    """Read out a cold-start A/B experiment: author, consumer and content metrics with statistics."""
    from pipelines.experiments.api import readout_for_run
    from pipelines.experiments.metrics import ReadoutConfig

    _settings()
    cfg = ReadoutConfig(
        experiment_id=experiment_id, high_exposure_threshold=high_exposure_threshold,
        exposure_target=exposure_target, hot_clicks=hot_clicks, layer=layer,
    )  # fmt: skip
    result = readout_for_run(dataset, start.date(), end.date(), cfg, treatment_share)
    table = Table(title=f"{experiment_id} ({result['design']}) {start.date()}..{end.date()}")
    for column in ("side", "metric", "control", "treatment", "relative lift [95% CI]", "p"):
        table.add_column(column)
    for name, m in result["metrics"].items():
        lift = f"{m['rel_diff']:+.2%} [{m['rel_ci'][0]:+.2%}, {m['rel_ci'][1]:+.2%}]"
        style = "bold" if m["significant"] else ""
        table.add_row(m["side"], name, f"{m['control']:.4g}", f"{m['treatment']:.4g}", lift, f"{m['p_value']:.3g}",
                      style=style)  # fmt: skip
    console.print(table)
    console.print(result["warning"])
    srm = result["srm"]
    console.print(
        f"SRM: {'[red]MISMATCH[/]' if srm['mismatch'] else 'ok'} (p = {srm['p_value']:.3g}, units {srm['counts']})"
    )
    console.print(f"report: {result['report']}  MLflow run: {result['mlflow_run_id']}")
