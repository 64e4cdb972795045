"""``coldstart airflow``, ``doctor`` and ``info``: the profile, its backends and what the datasets hold."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from pipelines.cli._common import _clear_errors, _print_summary, _settings, app, console
from pipelines.settings import get_settings


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_clear_errors
def airflow(ctx: typer.Context) -> None:
    """Run the `airflow` CLI against this profile (metadata DB, DAGs folder); migrates the DB first.

    Example: `coldstart airflow dags test validate_logs 2026-01-01`.
    """
    import os
    import subprocess
    import sys
    from pathlib import Path

    settings = _settings()
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings.airflow_environ()}
    binary = str(Path(sys.executable).parent / "airflow")
    subprocess.run([binary, "db", "migrate"], env=env, check=True, capture_output=True)
    raise typer.Exit(subprocess.run([binary, *ctx.args], env=env).returncode)


@app.command()
@_clear_errors
def doctor() -> None:
    """Check the profile's settings and that its backends (PostgreSQL, Redis in prod) are reachable."""
    from pipelines.services import check_backends

    settings = get_settings()
    checks = check_backends(settings)
    table = Table(title=f"profile {settings.profile}")
    for column in ("check", "ok", "detail"):
        table.add_column(column)
    for check in checks:
        table.add_row(check.name, "[green]yes[/]" if check.ok else "[red]no[/]", check.detail)
    console.print(table)
    if not all(c.ok for c in checks):
        raise typer.Exit(code=1)


@app.command()
@_clear_errors
def info(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Show the resolved settings and which partitions each dataset holds."""
    from pipelines.data.contract import LAYERS, TABLES, Store

    settings = get_settings()
    datasets: dict[str, dict[str, str]] = {}
    if settings.data_dir.is_dir():
        for folder in sorted(p for p in settings.data_dir.iterdir() if p.is_dir()):
            store = Store(settings.data_dir, folder.name)
            for layer in LAYERS:
                for table in TABLES:
                    days = store.partitions(table, layer)
                    if days:
                        datasets.setdefault(folder.name, {})[f"{layer}/{table}"] = (
                            f"{days[0]}..{days[-1]} ({len(days)})"
                        )
    payload = {
        "profile": settings.profile,
        "home": str(settings.home),
        "airflow_db": settings.airflow_db_url,
        "mlflow_tracking_uri": settings.mlflow_tracking_uri,
        "feast_online_store": settings.feast_store_config()["online_store"]["type"],
        "datasets": datasets,
    }
    if as_json:
        console.print_json(json.dumps(payload))
        return
    _print_summary("Settings", {k: v for k, v in payload.items() if k != "datasets"})
    for name, tables in datasets.items():
        _print_summary(f"dataset {name}", tables)
