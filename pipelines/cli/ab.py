"""``coldstart ab``: the readout of a cold-start A/B experiment."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import typer
from rich.table import Table

from pipelines.cli._common import _clear_errors, _settings, app, console
from pipelines.experiments.config import ReadoutConfig
from pipelines.orchestration import default


def _d(name: str):  # the option's default is ReadoutConfig's
    return default(ReadoutConfig, name)


def _help(name: str) -> str:
    return ReadoutConfig.model_fields[name].description or ""


@app.command()
@_clear_errors
def ab(
    start: Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"], help="First day of the window.")],
    end: Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"], help="Last day of the window.")],
    experiment_id: Annotated[str, typer.Option(help="Experiment to read out.")] = _d("experiment_id"),
    dataset: Annotated[str, typer.Option()] = "sim",
    new_item_hours: Annotated[int, typer.Option(min=1, help=_help("new_item_hours"))] = _d("new_item_hours"),
    high_exposure_threshold: Annotated[int, typer.Option(min=1)] = _d("high_exposure_threshold"),
    exposure_target: Annotated[int, typer.Option(min=1, help=_help("exposure_target"))] = _d("exposure_target"),
    hot_clicks: Annotated[int, typer.Option(min=1, help=_help("hot_clicks"))] = _d("hot_clicks"),
    hot_days: Annotated[int, typer.Option(min=1, help=_help("hot_days"))] = _d("hot_days"),
    first_exposure_cap_hours: Annotated[int, typer.Option(min=1, help=_help("first_exposure_cap_hours"))] = _d(
        "first_exposure_cap_hours"
    ),
    follow_up_days: Annotated[int, typer.Option(min=0, help=_help("follow_up_days"))] = _d("follow_up_days"),
    primary: Annotated[
        list[str] | None, typer.Option(help=f"{_help('primary')} Default: {', '.join(_d('primary'))}.")
    ] = None,
    guardrail: Annotated[
        list[str] | None, typer.Option(help=f"{_help('guardrails')} Default: {', '.join(_d('guardrails'))}.")
    ] = None,
    correction: Annotated[Literal["holm", "bh"], typer.Option(help=_help("correction"))] = _d("correction"),
    family: Annotated[Literal["all", "roles"], typer.Option(help=_help("family"))] = _d("family"),
    correct_daily: Annotated[bool, typer.Option(help=_help("correct_daily"))] = _d("correct_daily"),
    cuped_pre_days: Annotated[int, typer.Option(min=0, help=_help("cuped_pre_days"))] = _d("cuped_pre_days"),
    alpha: Annotated[float, typer.Option(min=0.0001, max=0.5)] = _d("alpha"),
    treatment_share: Annotated[float, typer.Option(min=0.01, max=0.99)] = 0.5,
    layer: Annotated[str, typer.Option(help="clean or raw logs.")] = "clean",
) -> None:
    """Read out a cold-start A/B experiment: author, consumer and content metrics with statistics."""
    from pipelines.experiments.api import readout_for_run

    _settings()
    cfg = ReadoutConfig(
        experiment_id=experiment_id, new_item_hours=new_item_hours, high_exposure_threshold=high_exposure_threshold,
        exposure_target=exposure_target, hot_clicks=hot_clicks, hot_days=hot_days,
        first_exposure_cap_hours=first_exposure_cap_hours, follow_up_days=follow_up_days,
        primary=tuple(primary or _d("primary")), guardrails=tuple(guardrail or _d("guardrails")),
        correction=correction, family=family, correct_daily=correct_daily, cuped_pre_days=cuped_pre_days,
        alpha=alpha, layer=layer,
    )  # fmt: skip
    result = readout_for_run(dataset, start.date(), end.date(), cfg, treatment_share)
    _print(result, f"{experiment_id} ({result['design']}) {start.date()}..{end.date()}")


def _print(result: dict, title: str) -> None:
    table = Table(title=title)
    method = result["correction"]["method"]
    for column in ("role", "side", "metric", "control", "treatment", "relative lift [95% CI]", "p", f"p {method}"):
        table.add_column(column)
    for name, m in result["metrics"].items():
        lift = f"{m['rel_diff']:+.2%} [{m['rel_ci'][0]:+.2%}, {m['rel_ci'][1]:+.2%}]"
        style = "bold" if m["significant"] else ""
        table.add_row(m["role"], m["side"], name, f"{m['control']:.4g}", f"{m['treatment']:.4g}", lift,
                      f"{m['p_value']:.3g}", f"{m['p_adjusted']:.3g}", style=style)  # fmt: skip
    console.print(table)
    for bucket, items in result["items"].items():
        console.print(
            f"{bucket}: {items['target_reached']}/{items.get('matured_24h', 0)} matured new items reached the 24 h "
            f"target; {items['hot_items']}/{items.get('matured_hot', 0)} hot; "
            f"{items.get('new_items', 0)} published (items followed to {result['observed_until']})"
        )
    for q in result["design_questions"]:
        console.print(f"[bold]{q['question']}[/] {q['answer']}")
    srm = result["srm"]
    console.print(
        f"SRM: {'[red]MISMATCH[/]' if srm['mismatch'] else 'ok'} (p = {srm['p_value']:.3g}, assigned units "
        f"{srm['counts']})"
    )
    console.print(f"report: {result['report']}  MLflow run: {result['mlflow_run_id']}")
