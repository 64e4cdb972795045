"""Entry points shared by the materialize_features DAG and the CLI."""

from __future__ import annotations

import datetime as dt

from pipelines.data.contract import Store
from pipelines.features.compute import FeatureLayout, compute_features
from pipelines.features.store import get_store, materialize_day, plan_and_apply
from pipelines.settings import get_settings


def compute_for_run(dataset: str, day: dt.date) -> dict:
    """Daily aggregates and feature snapshots of ``day`` from its clean partitions."""
    settings = get_settings()
    settings.ensure_home()
    return compute_features(Store(settings.data_dir, dataset), FeatureLayout.for_dataset(settings.home, dataset), day)


def apply_for_run(dataset: str, allow_destructive: bool = False) -> dict[str, list[str]]:
    """`feast plan` then `feast apply` on this profile's store."""
    return plan_and_apply(get_settings(), dataset, allow_destructive)


def materialize_for_run(dataset: str, day: dt.date) -> dict[str, str]:
    """Materialize ``day``'s snapshots (with the overlap for late data) into the online store."""
    settings = get_settings()
    store = get_store(settings, dataset)
    start, end = materialize_day(store, FeatureLayout.for_dataset(settings.home, dataset), day)
    return {"start": start.isoformat(), "end": end.isoformat()}
