"""``coldstart train``: train models, log them to MLflow and register each as ``candidate``."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated

import typer

from pipelines.catalog import models as catalog_models
from pipelines.cli._common import _clear_errors, _print_summary, _settings, app
from pipelines.orchestration import default
from pipelines.training.config import TrainRequest, trainer_overrides

# Unset trainer knobs keep each family's own defaults (the rankers' are TrainConfig's, the content tower's its own).
_FAMILY_DEFAULT = "Default: the model family's own."


@app.command()
@_clear_errors
def train(
    model: Annotated[list[str], typer.Option(help=f"Model(s): {', '.join(catalog_models())}.")],
    start: Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"], help="First day of the window.")],
    end: Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"], help="Last day (validation day).")],
    dataset: Annotated[str, typer.Option()] = default(TrainRequest, "dataset"),
    epochs: Annotated[int | None, typer.Option(min=1, help=_FAMILY_DEFAULT)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help=_FAMILY_DEFAULT)] = None,
    lr: Annotated[float | None, typer.Option(min=0, help=_FAMILY_DEFAULT)] = None,
    poso: Annotated[bool, typer.Option(help="POSO gates.")] = default(TrainRequest, "poso"),
    uie: Annotated[bool, typer.Option(help="UIE enhancement (PLE only).")] = default(TrainRequest, "uie"),
    config: Annotated[str, typer.Option(help="JSON overrides of the model config (unknown keys fail).")] = "{}",
    retrain: Annotated[bool, typer.Option(help="Train even if this exact version (same key) exists.")] = False,
) -> None:
    """Train models on the point-in-time training set, log to MLflow, register each as `candidate`.

    A version already trained with the same model, configs, window and data is made `candidate` again instead.
    With `two_tower` among the models, the champion two-tower's recall indexes are then built as of `end`, as
    `train_models`' `build_indexes` task does.
    """
    from pipelines.retrieval.build import build_indexes
    from pipelines.training.api import train as train_model

    settings = _settings()
    for name in model:
        request = TrainRequest(dataset=dataset, start=start.date(), end=end.date(), poso=poso, uie=uie,
                               train=trainer_overrides(epochs=epochs, batch_size=batch_size, lr=lr),
                               overrides=json.loads(config), reuse=not retrain)  # fmt: skip
        _print_summary(f"Trained {name}", _rows(train_model(name, request)))
    if "two_tower" in model:
        built = build_indexes(settings, dataset, until=end.date())
        _print_summary("Recall indexes", _rows(built) if built else {"skipped": "no two_tower@champion"})


def _rows(result: dict, prefix: str = "") -> dict[str, str]:
    """A training summary as table rows: nested results (metrics, per-scenario scores) flattened, floats to 4 places."""
    rows: dict[str, str] = {}
    for key, value in result.items():
        label = f"{prefix}{key}" if key not in ("metrics", "scores") else prefix
        if isinstance(value, dict):
            rows |= _rows(value, f"{label} " if label else "")
        else:
            rows[label] = f"{value:.4f}" if isinstance(value, float) else str(value)
    return rows
