"""A small platform with validated logs and a materialized Feast store, built once per session."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.data.contract import Store
from pipelines.features.compute import FeatureLayout, compute_features
from pipelines.settings import Settings, get_settings
from pipelines.validation.validate import validate_day

from ..conftest import run_sim

DAYS = [dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(4)]


@dataclass
class Platform:
    settings: Settings
    data: Store
    layout: FeatureLayout
    days: list[dt.date]


def build_platform(home: Path, **settings_overrides) -> Platform:
    """Simulate, validate and compute features for DAYS under ``home`` (no Feast yet)."""
    settings = get_settings(home=home, **settings_overrides)
    data = Store(settings.data_dir, "sim")
    run_sim(settings.data_dir, days=len(DAYS), users=1500, seed=5)
    layout = FeatureLayout.for_dataset(settings.home, "sim")
    for day in DAYS:
        validate_day(data, day, settings.reports_dir, docs=False)
        compute_features(data, layout, day)
    return Platform(settings, data, layout, DAYS)


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    return build_platform(tmp_path_factory.mktemp("platform"))


def apply_and_materialize(platform: Platform):
    """Apply the feature repo to ``platform``'s local Feast store and materialize every day; returns the store."""
    from pipelines.features.store import get_store, materialize_day, plan_and_apply

    plan_and_apply(platform.settings)
    store = get_store(platform.settings)
    for day in platform.days:
        materialize_day(store, platform.layout, day)
    return store


@pytest.fixture(scope="session")
def feast_store(platform: Platform):
    """The local-profile Feast store, applied and materialized for every day."""
    return apply_and_materialize(platform)
