"""``coldstart simulate`` and ``coldstart ingest``: event logs into the data contract."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from pipelines.cli._common import _clear_errors, _print_summary, _settings, app, ingest_app


@app.command()
@_clear_errors
def simulate(
    days: Annotated[int, typer.Option(min=1, help="Days of traffic to simulate.")] = 14,
    users: Annotated[int, typer.Option(min=10, help="Users who exist before the first day.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same bytes.")] = 7,
    start_date: Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"], help="First day.")] = dt.datetime(2026, 1, 1),
    impressions_per_day: Annotated[int | None, typer.Option(min=1, help="Traffic volume override.")] = None,
    policy: Annotated[str, typer.Option(help="Control exposure policy: popularity, random or boost.")] = "popularity",
    design: Annotated[
        str, typer.Option(help="Experiment design: none, user_split, author_split or balanced_author_split.")
    ] = "user_split",
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
