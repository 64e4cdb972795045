"""Small helpers the DAG files share: which dataset and days a run is about, and where a Param's default comes
from. No heavy imports here."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel


def default_args() -> dict[str, Any]:
    """The DAGs' task defaults: two retries, ``COLDSTART_RETRY_DELAY_S`` seconds apart (the setting's default:
    30). Read at parse time (the platform hands its settings to the dag-processor); building the settings reads
    the environment only, so parsing still does no I/O."""
    from pipelines.settings import get_settings

    delay = get_settings().retry_delay_s
    return {"retries": 2, "retry_delay": dt.timedelta(seconds=delay), "owner": "ml-platform"}


def run_days(context: dict[str, Any]) -> tuple[str, list[dt.date]]:
    """The dataset and the days (oldest first) a run works on.

    In order: the run's ``date`` Param (through its ``end`` Param, when set: a range); the days named by the
    Asset events that triggered the run (``date`` or ``dates`` in their extra, set by the upstream DAG; events
    queued while an earlier run was busy are consumed together, so every day they name is covered); the run's
    logical date.
    """
    params = context["params"]
    dataset = params.get("dataset", "sim")
    if params.get("date"):
        first = dt.date.fromisoformat(params["date"])
        last = dt.date.fromisoformat(params["end"]) if params.get("end") else first
        if last < first:
            raise ValueError(f"`end` ({last}) is before `date` ({first})")
        return dataset, [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    days: set[dt.date] = set()
    for events in (context.get("triggering_asset_events") or {}).values():
        for event in events:
            extra = event.extra or {}
            named = extra.get("dates") or [extra.get("date")]
            days |= {dt.date.fromisoformat(d) for d in named if d}
            dataset = extra.get("dataset", dataset)
    if days:
        return dataset, sorted(days)
    logical = context.get("logical_date")
    if logical is None:
        raise ValueError("this run names no day: set the `date` Param")
    return dataset, [logical.date()]


def run_day(context: dict[str, Any]) -> tuple[str, dt.date]:
    """The dataset and the newest day a run works on (see :func:`run_days`)."""
    dataset, days = run_days(context)
    return dataset, days[-1]


def day_event(dataset: str, days: list[dt.date]) -> dict[str, Any]:
    """The extra of an Asset event that hands ``days`` of ``dataset`` to the next DAG."""
    return {"dataset": dataset, "date": days[-1].isoformat(), "dates": [d.isoformat() for d in days]}


def _events(context: dict[str, Any]) -> list[Any]:
    return [e for es in (context.get("triggering_asset_events") or {}).values() for e in es]


def chain_params(context: dict[str, Any]) -> dict[str, Any]:
    """The run's Params, with the overrides the run that started the chain set for this DAG.

    A run started by hand sets its ``chain`` Param, e.g. ``{"train_models": {"epochs": 1}, "evaluate_models":
    {"n_bootstrap": 50}}``; every DAG hands it on in its Asset events, and each downstream DAG applies its own
    entry, checked against its Param definitions (an unknown Param or a value its schema refuses fails the task).
    """
    params = dict(context["params"])
    dag = context["dag"]
    for event in _events(context):
        for key, value in ((event.extra or {}).get("chain") or {}).get(dag.dag_id, {}).items():
            if key not in dag.params:
                raise ValueError(f"chain override {dag.dag_id}.{key}: {dag.dag_id} has no such Param")
            dag.params.get_param(key).resolve(value=value)  # raises ParamValidationError with the reason
            params[key] = value
    return params


def chain_extra(context: dict[str, Any]) -> dict[str, Any]:
    """What an Asset event hands on downstream: the ``chain`` overrides this run got (Param or upstream event)."""
    chain = context["params"].get("chain") or next(
        ((e.extra or {}).get("chain") for e in _events(context) if (e.extra or {}).get("chain")), None
    )
    return {"chain": chain} if chain else {}


def run_models(context: dict[str, Any]) -> list[str]:
    """The models a run works on: those named by the asset events that triggered it, else the `models` Param.

    Evaluation and promotion take only models with an ``evaluate`` hook: a family that gates itself when it
    trains has nothing to evaluate here (``train_models`` trains the content tower and the retrieval model in
    tasks that emit no event; a new self-gating family trained in ``train`` would), and a run triggered by such
    events alone works on no model (not on the Param's defaults, which nobody trained).
    """
    from pipelines.catalog import models as catalog_models

    named = {(e.extra or {}).get("model") for e in _events(context)} - {None}
    if not named:
        return list(chain_params(context)["models"])
    return sorted(named & set(catalog_models(hook="evaluate")))


def training_stage(models: list[str], stage: str) -> list[str]:
    """The chosen models of one stage of ``train_models``, in their order: ``first`` (families others read: the
    content tower), ``retrieval`` (the two-tower: trained and its indexes built before the rankers), ``rest``."""
    from pipelines.catalog import model as catalog_model

    def stage_of(name: str) -> str:
        family = catalog_model(name).family
        return "first" if family.train_first else "retrieval" if family.retrieval else "rest"

    return [m for m in models if stage_of(m) == stage]


def default(config: type[BaseModel], name: str) -> Any:
    """The default of field ``name`` of ``config``: what a DAG Param or CLI option starts from."""
    field = config.model_fields[name]
    return field.default_factory() if field.default_factory is not None else field.default


def train_request(context: dict[str, Any], model: str) -> Any:
    """The ``TrainRequest`` of ``model`` in a ``train_models`` run: its window (``holdout_days`` before the run's
    day, a family that trains on the dataset's window only), the trainer knobs the run set (unset ones keep the
    family's defaults), POSO / UIE, the model's ``model_config`` entry and ``retrain``."""
    from pipelines.catalog import model as catalog_model
    from pipelines.training.config import TrainRequest, trainer_overrides

    p = chain_params(context)
    window: dict = {"dataset": p["dataset"]}
    if catalog_model(model).family.trains_on_window:  # a window of the run's days, `holdout_days` before
        dataset, day = run_day(context)
        end = day - dt.timedelta(days=int(p["holdout_days"]))
        window = {"dataset": dataset, "end": end, "window_days": int(p["window_days"])}
    knobs = trainer_overrides(epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"])
    return TrainRequest(**window, train=knobs, poso=p["poso"], uie=p["uie"],
                        overrides=p["model_config"].get(model, {}), reuse=not p["retrain"])  # fmt: skip
