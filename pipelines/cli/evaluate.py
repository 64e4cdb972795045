"""``coldstart evaluate`` and ``coldstart champion``: the per-slice evaluation, the gate and its baseline."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated

import typer

from pipelines.catalog import models as catalog_models
from pipelines.cli._common import _clear_errors, _print_summary, _settings, app
from pipelines.evaluation.config import EvaluationConfig
from pipelines.orchestration import default


@app.command()
@_clear_errors
def evaluate(
    model: Annotated[
        list[str],
        typer.Option(help=f"Model(s) whose `candidate` to evaluate: {', '.join(catalog_models(hook='evaluate'))}."),
    ],
    dataset: Annotated[str, typer.Option()] = "sim",
    start: Annotated[
        dt.datetime | None, typer.Option(formats=["%Y-%m-%d"], help="First held-out day (default: after training).")
    ] = None,
    end: Annotated[dt.datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Last held-out day.")] = None,
    slices: Annotated[str, typer.Option(help="JSON SliceConfig overrides, e.g. '{\"user_new_below\": 3}'.")] = "{}",
    gate: Annotated[str, typer.Option(help="JSON GateConfig overrides (tolerances, floors, checks).")] = "{}",
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap resamples for the intervals.")] = default(
        EvaluationConfig, "n_bootstrap"
    ),
    eval_days: Annotated[int, typer.Option(min=1)] = default(EvaluationConfig, "eval_days"),
    max_users: Annotated[int | None, typer.Option(min=1, help="MeLU: users per scenario.")] = None,
    allow_skipped_cold_checks: Annotated[
        bool, typer.Option(help="Pass even when a cold slice had no check that could run (default: it blocks).")
    ] = False,
    policies: Annotated[
        str, typer.Option(help="Rankers: JSON PolicyConfig overrides to score with ({}: what the bento serves).")
    ] = "{}",
) -> None:
    """Evaluate candidates per cold-start slice against the champion; report to MLflow; apply the gate.

    Exit code 1 when a gate blocks (reasons printed), 2 on a usage error.
    """
    from pipelines.evaluation.api import evaluate_for_run

    _settings()
    gate_overrides = json.loads(gate) | ({"allow_skipped_cold_checks": True} if allow_skipped_cold_checks else {})
    config = {"slices": json.loads(slices), "gate": gate_overrides, "n_bootstrap": bootstrap,
              "eval_days": eval_days, "max_users": max_users, "policies": json.loads(policies)}  # fmt: skip
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
