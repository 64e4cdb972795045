"""``coldstart platform``: start, stop and inspect the platform; trigger a DAG and follow its Asset chain."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated

import typer
from rich.table import Table

from pipelines.cli._common import _clear_errors, _print_summary, _settings, console, platform_app
from pipelines.settings import Settings


@platform_app.command("up")
@_clear_errors
def platform_up(
    workers: Annotated[int, typer.Option(min=1, help="Celery workers (prod profile).")] = 1,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for every component to be healthy.")] = 300,
) -> None:
    """Start Airflow (api-server, scheduler, dag-processor, triggerer; Celery workers in prod) and MLflow on
    127.0.0.1; print the URLs and the login."""
    from pipelines.platform.launcher import admin_password, up

    settings = _settings()
    state = up(settings, workers=workers, timeout=timeout)
    rows = {name: f"pid {c['pid']}  log {c['log']}" for name, c in state["components"].items()}
    _print_summary(f"Platform up ({settings.profile} profile, {settings.home})", rows | {
        "Airflow UI and REST API": state["airflow"],
        "login": f"admin / {admin_password(settings)}",
        "MLflow UI": state["mlflow"],
        "stop": "coldstart platform down",
    })  # fmt: skip


@platform_app.command("down")
@_clear_errors
def platform_down() -> None:
    """Stop every process `coldstart platform up` started (and only those)."""
    from pipelines.platform.launcher import down

    stopped = down(_settings())
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@platform_app.command("status")
@_clear_errors
def platform_status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Each component's process and health, the URLs and the login; exit 1 unless everything is healthy."""
    from pipelines.platform.launcher import status

    info = status(_settings())
    if as_json:
        console.print_json(json.dumps(info))
    else:
        table = Table(title=f"platform ({info['profile']} profile, {info['home']})")
        for column in ("component", "pid", "running"):
            table.add_column(column)
        for name, c in info["components"].items():
            table.add_row(name, str(c["pid"]), "[green]yes[/]" if c["running"] else "[red]no[/]")
        console.print(table)
        _print_summary("health", info["health"] or {"platform": "not running"})
        login = info["login"]
        _print_summary("URLs", {"Airflow": info["airflow"], "MLflow": info["mlflow"],
                                "login": f"{login['username']} / {login['password']}" if login else "-"})  # fmt: skip
    healthy = info["health"] and set(info["health"].values()) == {"healthy"}
    if not healthy or not all(c["running"] for c in info["components"].values()):
        raise typer.Exit(code=1)


@platform_app.command("add-worker")
@_clear_errors
def platform_add_worker() -> None:
    """Start one more Celery worker (prod profile): the scale-out path."""
    from pipelines.platform.launcher import add_worker

    console.print(f"started {add_worker(_settings())}")


@platform_app.command("trigger")
@_clear_errors
def platform_trigger(
    dag_id: Annotated[str, typer.Argument(help="validate_logs, materialize_features, train_models, ...")],
    conf: Annotated[str, typer.Option(help="JSON conf: the run's Params.")] = "{}",
    follow: Annotated[bool, typer.Option(help="Wait for the run and every run it sets off through Assets.")] = True,
    timeout: Annotated[float, typer.Option(min=1)] = 3600,
) -> None:
    """Trigger a DAG run through the REST API, then follow the Asset chain downstream; exit 1 if a run failed."""
    from pipelines.platform.client import CHAIN, now

    client = _airflow_client(_settings())
    since = now()
    run = client.trigger(dag_id, json.loads(conf))
    console.print(f"triggered {dag_id} run {run['dag_run_id']}")
    if not follow:
        return
    dags = CHAIN[CHAIN.index(dag_id) :] if dag_id in CHAIN else (dag_id,)
    runs = client.follow(dags, since, expect=(dag_id,), timeout=timeout)
    _print_chain(client, runs)
    if any(r["state"] != "success" for rs in runs.values() for r in rs):
        raise typer.Exit(code=1)


def _airflow_client(settings: Settings):
    from pipelines.platform.client import AirflowClient
    from pipelines.platform.launcher import ADMIN_USER, admin_password, airflow_url

    return AirflowClient(airflow_url(settings), ADMIN_USER, admin_password(settings))


def _print_chain(client, runs: dict[str, list[dict]]) -> None:
    """One line per run: DAG, how it started, state, seconds; the failed tasks' reasons below a failed run."""
    table = Table(title="DAG runs", title_justify="left")
    for column in ("DAG", "run", "triggered by", "state", "seconds"):
        table.add_column(column)
    failed = []
    for dag_id, dag_runs in runs.items():
        for run in dag_runs:
            seconds = ""
            if run.get("start_date") and run.get("end_date"):
                took = dt.datetime.fromisoformat(run["end_date"]) - dt.datetime.fromisoformat(run["start_date"])
                seconds = f"{took.total_seconds():.0f}"
            style = "green" if run["state"] == "success" else "red"
            table.add_row(dag_id, run["dag_run_id"], run["run_type"], f"[{style}]{run['state']}[/]", seconds)
            failed += [run] if run["state"] == "failed" else []
    console.print(table)
    for run in failed:
        console.print(client.failure(run))
