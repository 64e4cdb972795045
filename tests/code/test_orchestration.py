"""What a DAG run works on: days from Params or Asset events, and the chain's Param overrides."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from pipelines.orchestration import chain_extra, chain_params, day_event, run_day, run_days, run_models


def events(*extras: dict) -> dict:
    return {"asset": [SimpleNamespace(extra=extra) for extra in extras]}


def context(params: dict | None = None, triggering: dict | None = None, logical=None, dag=None) -> dict:
    return {"params": params or {}, "triggering_asset_events": triggering or {}, "logical_date": logical, "dag": dag}


def test_a_date_param_names_one_day_or_a_range() -> None:
    assert run_days(context({"date": "2026-01-02"})) == ("sim", [dt.date(2026, 1, 2)])
    dataset, days = run_days(context({"date": "2026-01-02", "end": "2026-01-04", "dataset": "x"}))
    assert dataset == "x" and days == [dt.date(2026, 1, 2), dt.date(2026, 1, 3), dt.date(2026, 1, 4)]
    with pytest.raises(ValueError, match="before"):
        run_days(context({"date": "2026-01-04", "end": "2026-01-02"}))


def test_queued_events_are_consumed_together_so_no_day_is_skipped() -> None:
    triggering = events(day_event("sim", [dt.date(2026, 1, 1), dt.date(2026, 1, 2)]), {"date": "2026-01-05"})
    assert run_days(context(triggering=triggering)) == ("sim", [dt.date(2026, 1, d) for d in (1, 2, 5)])
    assert run_day(context(triggering=triggering)) == ("sim", dt.date(2026, 1, 5))


def test_without_param_or_event_the_logical_date_or_a_clear_error() -> None:
    assert run_days(context(logical=dt.datetime(2026, 3, 1, tzinfo=dt.UTC))) == ("sim", [dt.date(2026, 3, 1)])
    with pytest.raises(ValueError, match="set the `date` Param"):
        run_days(context())


@pytest.fixture(scope="module")
def dag():
    from airflow.sdk import DAG, Param

    return DAG("train_models", schedule=None, params={"epochs": Param(3, type="integer", minimum=1),
                                                      "models": Param(["esmm"], type="array")})  # fmt: skip


def test_chain_overrides_apply_to_their_dag_only_and_are_validated(dag) -> None:
    chain = {"train_models": {"epochs": 1}, "evaluate_models": {"n_bootstrap": 5}}
    params = {"epochs": 3, "models": ["esmm"]}
    assert chain_params(context(params, events({"chain": chain}), dag=dag)) == {"epochs": 1, "models": ["esmm"]}
    assert chain_params(context(params, events({"date": "2026-01-01"}), dag=dag)) == params
    with pytest.raises(ValueError, match="train_models has no such Param"):
        chain_params(context(params, events({"chain": {"train_models": {"epoch": 1}}}), dag=dag))
    from airflow.sdk.definitions.param import ParamValidationError

    with pytest.raises(ParamValidationError):
        chain_params(context(params, events({"chain": {"train_models": {"epochs": 0}}}), dag=dag))


def test_the_chain_is_handed_on_from_the_param_or_the_triggering_event() -> None:
    chain = {"evaluate_models": {"n_bootstrap": 5}}
    assert chain_extra(context({"chain": chain})) == {"chain": chain}
    assert chain_extra(context({"chain": {}}, events({"chain": chain}))) == {"chain": chain}
    assert chain_extra(context({"chain": {}}, events({"date": "2026-01-01"}))) == {}


def test_models_come_from_the_events_else_the_param(dag) -> None:
    triggering = events({"model": "ple"}, {"model": "esmm"}, {"model": "ple"})
    assert run_models(context({"models": ["melu"]}, triggering, dag=dag)) == ["esmm", "ple"]
    assert run_models(context({"models": ["melu"]}, dag=dag)) == ["melu"]
    # A self-gating model (no evaluate hook) is trained and announced, but evaluation has nothing to take from it.
    assert run_models(context({"models": ["melu"]}, events({"model": "two_tower"}, {"model": "esmm"}), dag=dag)) == [
        "esmm"
    ]
    assert run_models(context({"models": ["melu"]}, events({"model": "two_tower"}), dag=dag)) == []


def test_task_retry_delay_comes_from_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.orchestration import default_args

    assert default_args()["retry_delay"] == dt.timedelta(seconds=30) and default_args()["retries"] == 2
    monkeypatch.setenv("COLDSTART_RETRY_DELAY_S", "2")
    assert default_args()["retry_delay"] == dt.timedelta(seconds=2)
