"""``coldstart``: the command-line twin of every pipeline stage.

Each command is a thin wrapper around a function in ``pipelines``; expected failures (bad settings, a missing
partition, a schema violation, a missing dataset) end with a one-line message and exit code 2, not a traceback.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError as PydanticValidationError
from rich.console import Console
from rich.table import Table

from pipelines.settings import Settings, SettingsError, get_settings

app = typer.Typer(
    help="Cold-start recommendation platform: simulate, ingest, validate, featurize, train, evaluate, serve.",
    no_args_is_help=True,
    add_completion=False,
)
ingest_app = typer.Typer(help="Bring real datasets into the event-log contract.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
platform_app = typer.Typer(help="Run the platform as a service on 127.0.0.1: Airflow and MLflow.", no_args_is_help=True)
app.add_typer(platform_app, name="platform")
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def _expected_errors() -> tuple[type[BaseException], ...]:
    from httpx import HTTPStatusError  # a REST call Airflow refused (unknown DAG, a conf its Params reject)

    from pipelines.data.contract import ContractError, MissingPartitionError
    from pipelines.data.movielens import MovieLensMissingError
    from pipelines.evaluation.api import EvaluationError
    from pipelines.evaluation.slices import SliceError
    from pipelines.platform.client import ChainError
    from pipelines.platform.launcher import PlatformError
    from pipelines.serving.promote import PromotionError
    from pipelines.validation.validate import ValidationError

    return (SettingsError, ContractError, MissingPartitionError, MovieLensMissingError, ValidationError,
            EvaluationError, SliceError, PydanticValidationError, PromotionError, PlatformError,
            ChainError, HTTPStatusError)  # fmt: skip


def _clear_errors(func: F) -> F:
    """Turn the platform's expected errors into a red one-line message and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except _expected_errors() as exc:
            err_console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def _settings() -> Settings:
    settings = get_settings()
    settings.ensure_home()
    return settings


@app.command()
@_clear_errors
def simulate(
    days: Annotated[int, typer.Option(min=1, help="Days of traffic to simulate.")] = 14,
    users: Annotated[int, typer.Option(min=10, help="Users who exist before the first day.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same bytes.")] = 7,
    start_date: Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"], help="First day.")] = dt.datetime(2026, 1, 1),
    impressions_per_day: Annotated[int | None, typer.Option(min=1, help="Traffic volume override.")] = None,
    policy: Annotated[str, typer.Option(help="Control exposure policy: popularity, random or boost.")] = "popularity",
    design: Annotated[str, typer.Option(help="Experiment design: none, user_split or author_split.")] = "user_split",
    dataset: Annotated[str, typer.Option(help="Dataset name under COLDSTART_HOME/data.")] = "sim",
) -> None:
    """Simulate a content platform and write its event logs (and hidden truth) through the contract."""
    from pydantic import ValidationError

    from pipelines.data.contract import Store
    from pipelines.data.simulator import Simulator, SimulatorConfig

    settings = _settings()
    try:
        cfg = SimulatorConfig(
            days=days, users=users, seed=seed, start_date=start_date.date(),
            impressions_per_day=impressions_per_day, policy=policy, design=design,
        )  # fmt: skip
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from None
    summary = Simulator(cfg, Store(settings.data_dir, dataset)).run()
    _print_summary(
        f"Simulated {dataset!r}: {cfg.start_date}..{cfg.end_date}",
        {
            "users": summary.users,
            "items": summary.items,
            "impressions": summary.impressions,
            "CTR": f"{summary.clicks / max(summary.impressions, 1):.4f}",
            "CVR (per click)": f"{summary.conversions / max(summary.clicks, 1):.4f}",
            "new-user share of impressions": f"{summary.new_user_impressions / max(summary.impressions, 1):.4f}",
            "items published": summary.publishes,
            "seconds": f"{summary.seconds:.1f}",
            "impressions/s": f"{summary.impressions / max(summary.seconds, 1e-9):,.0f}",
            "written to": str(settings.data_dir / dataset),
        },
    )


@ingest_app.command("movielens")
@_clear_errors
def ingest_movielens() -> None:
    """Map MovieLens-1M into the contract and build MeLU's warm / new-user / new-item / both-new split."""
    from pipelines.data.movielens import ingest_movielens as run

    settings = _settings()
    summary = run(settings.data_dir)
    rows = {k: summary[k] for k in ("users", "items", "ratings", "first_rating", "last_rating")}
    for name, shape in summary["split"]["scenarios"].items():
        rows[f"MeLU {name}"] = f"{shape['users']} users, {shape['ratings']} ratings"
    rows["split"] = summary["split"]["path"]
    _print_summary("Ingested MovieLens-1M", rows)


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
                "summary": str(settings.home / "reports" / "validation" / dataset / f"{day}.json"),
            },
        )
        enforce_threshold(summary)


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


@app.command()
@_clear_errors
def train(
    model: Annotated[list[str], typer.Option(help="Model(s): esmm, ple, mmoe, shared_bottom, base, melu.")],
    start: Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"], help="First day of the window.")],
    end: Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"], help="Last day (validation day).")],
    dataset: Annotated[str, typer.Option()] = "sim",
    epochs: Annotated[int, typer.Option(min=1)] = 3,
    batch_size: Annotated[int, typer.Option(min=1)] = 1024,
    lr: Annotated[float, typer.Option(min=0)] = 1e-3,
    poso: Annotated[bool, typer.Option(help="POSO gates.")] = False,
    uie: Annotated[bool, typer.Option(help="UIE enhancement (PLE only).")] = True,
    config: Annotated[str, typer.Option(help="JSON overrides of the model config (unknown keys fail).")] = "{}",
    retrain: Annotated[bool, typer.Option(help="Train even if this exact version (same key) exists.")] = False,
) -> None:
    """Train models on the point-in-time training set, log to MLflow, register each as `candidate`.

    A version already trained with the same model, configs, window and data is made `candidate` again instead.
    """
    from pipelines.training.api import train_for_run

    settings = _settings()
    for name in model:
        if name == "melu":
            from pipelines.models.melu import MeLUConfig
            from pipelines.training.meta import train_melu

            result = train_melu(settings, MeLUConfig(**json.loads(config)), epochs=epochs)
            scores = {f"{s} MAE": f"{v['mae']:.4f}" for s, v in result["scores"].items()}
            _print_summary("Trained melu", {"version": result["version"], "run_id": result["run_id"], **scores})
            continue
        overrides = {"poso": poso, **({"uie": {}} if name == "ple" and uie else {}), **json.loads(config)}
        train_cfg = {"epochs": epochs, "batch_size": batch_size, "lr": lr}
        result = train_for_run(name, dataset, start.date(), end.date(), overrides, train_cfg, reuse=not retrain)
        _print_summary(
            f"Trained {name}",
            {
                **{k: v for k, v in result.items() if k != "metrics"},
                **{k: f"{v:.4f}" for k, v in result["metrics"].items()},
            },
        )


@app.command()
@_clear_errors
def evaluate(
    model: Annotated[list[str], typer.Option(help="Model(s) whose `candidate` to evaluate: esmm, ple, ..., melu.")],
    dataset: Annotated[str, typer.Option()] = "sim",
    start: Annotated[
        dt.datetime | None, typer.Option(formats=["%Y-%m-%d"], help="First held-out day (default: after training).")
    ] = None,
    end: Annotated[dt.datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Last held-out day.")] = None,
    slices: Annotated[str, typer.Option(help="JSON SliceConfig overrides, e.g. '{\"user_new_below\": 3}'.")] = "{}",
    gate: Annotated[str, typer.Option(help="JSON GateConfig overrides (tolerances, floors, checks).")] = "{}",
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap resamples for the intervals.")] = 200,
    eval_days: Annotated[int, typer.Option(min=1)] = 1,
    max_users: Annotated[int | None, typer.Option(min=1, help="MeLU: users per scenario.")] = None,
) -> None:
    """Evaluate candidates per cold-start slice against the champion; report to MLflow; apply the gate.

    Exit code 1 when a gate blocks (reasons printed), 2 on a usage error.
    """
    from pipelines.evaluation.api import evaluate_for_run

    _settings()
    config = {"slices": json.loads(slices), "gate": json.loads(gate), "n_bootstrap": bootstrap,
              "eval_days": eval_days, "max_users": max_users}  # fmt: skip
    blocked = False
    for name in model:
        out = evaluate_for_run(name, dataset, start.date() if start else None, end.date() if end else None, config)
        rows = {k: v for k, v in out.items() if k != "reasons"}
        rows["gate"] = "passed" if out["passed"] else "BLOCKED: " + "; ".join(out["reasons"])
        _print_summary(f"Evaluated {name}", rows)
        blocked |= not out["passed"]
    if blocked:
        raise typer.Exit(code=1)


@app.command()
@_clear_errors
def champion(
    model: Annotated[str, typer.Argument(help="esmm, ple, ..., melu.")],
    version: Annotated[str | None, typer.Argument(help="Version to crown (default: the `approved` one).")] = None,
) -> None:
    """Point the `champion` alias (what the next gate compares against) at a version."""
    from pipelines.evaluation.api import set_champion

    settings = _settings()
    _print_summary(f"Champion of {model}", set_champion(settings, model, version))


@app.command()
@_clear_errors
def promote(
    model: Annotated[str, typer.Argument(help="esmm, ple, ..., melu.")],
    version: Annotated[str | None, typer.Option(help="Version to promote (default: the `approved` one).")] = None,
) -> None:
    """Import an approved version into BentoML, build, serve and smoke-test it; then alias it `staging`."""
    from pipelines.serving.promote import promote as promote_model

    record = promote_model(_settings(), model, version)
    _print_summary(f"Promoted {model} to staging", {k: v for k, v in record.items() if k != "history"})


@app.command()
@_clear_errors
def rollback(model: Annotated[str, typer.Argument(help="esmm, ple, ..., melu.")]) -> None:
    """Put the previous staging version of a model back (aliases `staging` and `champion`)."""
    from pipelines.serving.promote import rollback as rollback_model

    record = rollback_model(_settings(), model)
    _print_summary(f"Rolled {model} back", {k: v for k, v in record.items() if k != "history"})


@app.command()
@_clear_errors
def serve(
    model: Annotated[str, typer.Argument(help="esmm, ple, ..., melu: serves its staging bento.")],
    port: Annotated[int, typer.Option(min=1, max=65535)] = 3000,
    workers: Annotated[int, typer.Option(min=1)] = 1,
) -> None:
    """Serve the staging bento of a model on 127.0.0.1 (foreground; token from COLDSTART_API_TOKEN)."""
    import subprocess

    from pipelines.serving.bento import serve_environ
    from pipelines.serving.promote import PromotionError, staging_record

    settings = _settings()
    record = staging_record(settings, model)
    if record is None:
        raise PromotionError(f"{model} has no staging bento: promote a version first (coldstart promote {model})")
    args = ["bentoml", "serve", record["bento"], "--host", "127.0.0.1", "--port", str(port), "--api-workers",
            str(workers)]  # fmt: skip
    raise typer.Exit(subprocess.run(args, env=serve_environ(settings, record["bento"])).returncode)


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


@app.command()
@_clear_errors
def lookup(
    user: Annotated[int | None, typer.Option(help="User id.")] = None,
    item: Annotated[list[int] | None, typer.Option(help="Item id (repeat for several).")] = None,
    service: Annotated[str, typer.Option(help="Feature service.")] = "esmm_v1",
    dataset: Annotated[str, typer.Option()] = "sim",
) -> None:
    """Online feature lookup by id, as another team would do it through the SDK (prints JSON)."""
    from pipelines.features.store import get_store, online_features

    if user is None and not item:
        raise typer.BadParameter("give --user, --item or both")
    store = get_store(_settings(), dataset)
    console.print_json(json.dumps(online_features(store, service, user, item), default=str))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_clear_errors
def feast(ctx: typer.Context) -> None:
    """Run the `feast` CLI on feature_repo/ with this profile's store, e.g. `coldstart feast serve -p 6566`."""
    import subprocess

    from pipelines.features.store import feast_invocation

    prefix, env = feast_invocation(_settings())
    raise typer.Exit(subprocess.run([*prefix, *ctx.args], env=env).returncode)


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


@app.command()
@_clear_errors
def demo(
    days: Annotated[int, typer.Option(min=3)] = 7,
    users: Annotated[int, typer.Option(min=10)] = 5_000,
    seed: Annotated[int, typer.Option()] = 7,
    down: Annotated[bool, typer.Option("--down", help="Stop the platform at the end.")] = False,
) -> None:
    """Run the platform end to end on the local profile, through the real Airflow scheduler.

    Simulates the logs, starts the platform (`coldstart platform up`), triggers `validate_logs` over every
    simulated day through the REST API and follows the Asset chain (validate -> materialize -> train ->
    evaluate -> promote), trains MeLU the same way, reads out the A/B experiment, asks the staging ranker,
    and prints where to look. The platform keeps running unless `--down`.
    """
    from pipelines.data.contract import Store
    from pipelines.platform.client import CHAIN, now
    from pipelines.platform.launcher import admin_password
    from pipelines.platform.launcher import down as platform_down

    simulate(days=days, users=users, seed=seed, start_date=dt.datetime(2026, 1, 1), impressions_per_day=None,
             policy="popularity", design="user_split", dataset="sim")  # fmt: skip
    ingest_movielens()
    settings = _settings()
    platform_up(workers=1, timeout=300)
    client = _airflow_client(settings)
    client.wait_for_dags((*CHAIN, "coldstart_ab_metrics"))
    sim_days = Store(settings.data_dir, "sim").partitions("impressions")
    first, last = sim_days[0].isoformat(), sim_days[-1].isoformat()

    console.rule("validate -> materialize -> train (ESMM, PLE+UIE) -> evaluate -> promote, through the scheduler")
    # Demo-sized Params for the DAGs downstream, handed on through the Asset events.
    evaluate = {"n_bootstrap": 100, "max_users": 300}
    chain = {"train_models": {"models": ["esmm", "ple"], "epochs": 2, "lr": 0.003}, "evaluate_models": evaluate}
    since = now()
    client.trigger("validate_logs", {"date": first, "end": last, "chain": chain}, note="coldstart demo")
    _print_chain(client, client.follow(CHAIN, since, expect=CHAIN, timeout=3600))

    console.rule("MeLU: train_models -> evaluate -> promote")
    since = now()
    melu = {"models": ["melu"], "epochs": 8, "model_config": {"melu": {"meta_lr": 0.0005}},
            "chain": {"evaluate_models": evaluate}}  # fmt: skip
    client.trigger("train_models", melu,
                   note="coldstart demo: MeLU, at a larger meta learning rate than the paper's 5e-5 so that a few "
                   "epochs reach a useful model")  # fmt: skip
    _print_chain(client, client.follow(CHAIN[2:], since, expect=CHAIN[2:4], timeout=3600))

    console.rule("Cold-start A/B readout (coldstart_ab_metrics)")
    run = client.trigger("coldstart_ab_metrics", {"start": first, "end": last, "high_exposure_threshold": 100})
    _print_chain(client, {"coldstart_ab_metrics": [client.wait_run("coldstart_ab_metrics", run["dag_run_id"])]})

    from pipelines.serving.promote import staging_record

    if staging_record(settings, "esmm"):
        _ask_staging_ranker()
    reports = settings.home / "reports"
    _print_summary(
        "Where to look",
        {
            "Airflow UI": f"{client.base_url}  (user admin, password {admin_password(settings)})",
            "MLflow UI": f"http://127.0.0.1:{settings.mlflow_port}",
            "evaluation reports": str(reports / "evaluation" / "sim"),
            "A/B report": str(reports / "ab" / "sim" / "exp_new_item_boost" / f"{first}_{last}" / "report.html"),
            "Data Docs": str(reports / "validation" / "sim" / f"{last}" / "index.html"),
            "staging bentos": str(settings.home / "serving"),
            "stop the platform": "coldstart platform down",
        },
    )
    if down:
        platform_down(settings)


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


def _ask_staging_ranker() -> None:
    """Serve the staging ranker on 127.0.0.1, send it one request (a known user, a new one), print, stop."""
    import secrets

    import httpx

    from pipelines.data.contract import Store
    from pipelines.serving.bento import serve as serve_bento
    from pipelines.serving.bento import stop
    from pipelines.serving.promote import staging_record

    settings = _settings()
    data = Store(settings.data_dir, "sim")
    day = data.partitions("impressions", layer="clean")[-1]
    rows = data.read("impressions", day, layer="clean", columns=["user_id", "item_id"]).to_pandas()
    token = secrets.token_urlsafe(16)
    process, url = serve_bento(settings, staging_record(settings, "esmm")["bento"], token=token)
    candidates = [int(i) for i in rows["item_id"].drop_duplicates().head(200)]
    try:
        for user in (int(rows["user_id"].iloc[0]), 10**12):
            # "now" = the end of the simulated log, so the last day's new items are hours old, as in production.
            now = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC).isoformat()
            body = {"user_id": user, "candidates": candidates, "k": 5, "now": now}
            answer = httpx.post(f"{url}/rank", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
            answer.raise_for_status()
            console.print(f"[bold]POST {url}/rank[/] user {user} (200 candidates, top 5):")
            console.print_json(data=answer.json())
    finally:
        stop(process)


def _print_summary(title: str, rows: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows.items():
        table.add_row(key, str(value))
    console.print(table)
