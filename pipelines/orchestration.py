"""Small helpers the DAG files share: which dataset and day a run is about. No heavy imports here."""

from __future__ import annotations

import datetime as dt
from typing import Any


def run_day(context: dict[str, Any]) -> tuple[str, dt.date]:
    """The dataset and day a run works on.

    In order: the run's ``date`` Param; the day named by the asset event that triggered the run (set by the
    upstream DAG); the run's logical date.
    """
    params = context["params"]
    dataset = params.get("dataset", "sim")
    if params.get("date"):
        return dataset, dt.date.fromisoformat(params["date"])
    for events in (context.get("triggering_asset_events") or {}).values():
        for event in reversed(list(events)):
            extra = event.extra or {}
            if extra.get("date"):
                return extra.get("dataset", dataset), dt.date.fromisoformat(extra["date"])
    logical = context.get("logical_date")
    if logical is None:
        raise ValueError("this run names no day: set the `date` Param")
    return dataset, logical.date()


def run_models(context: dict[str, Any]) -> list[str]:
    """The models a run works on: those named by the asset events that triggered it, else the `models` Param."""
    events = [e for es in (context.get("triggering_asset_events") or {}).values() for e in es]
    models = sorted({(e.extra or {}).get("model") for e in events} - {None})
    return models or list(context["params"]["models"])
