"""Promotion to staging: import → build → serve on 127.0.0.1 → smoke test → alias ``staging``; and rollback.

Only a version the gate passed (tag ``gate=passed``) is promoted. Any failing step raises
:class:`PromotionError` and leaves the previous staging as it was: the MLflow aliases ``staging`` and
``champion``, and ``COLDSTART_HOME/serving/<model>.json`` (the staging record: version, bento tag, history),
are only written after the smoke test passed. The staging version becomes the ``champion`` the next
candidate's gate compares against. The smoke test runs golden requests, cold users and items and bad input
against the real ``bentoml serve`` of the built bento. Before a ranker is served, the near-line state is
caught up on the newest clean days (:func:`catch_up_nearline`), as the deployment's near-line writer keeps it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
from pathlib import Path

from pipelines.catalog import model as catalog_model
from pipelines.catalog.registry import registry_client
from pipelines.serving.bento import BentoError, build, import_model, serve, stop
from pipelines.serving.smoke import smoke_test
from pipelines.settings import Settings

log = logging.getLogger(__name__)

ONLINE_WAIT_S = 1800.0  # how long a promotion waits for the materialization running beside the chain


class PromotionError(RuntimeError):
    """A promotion step failed; the previous staging is untouched."""


def record_path(settings: Settings, model: str) -> Path:
    return settings.home / "serving" / f"{model}.json"


def staging_record(settings: Settings, model: str) -> dict | None:
    path = record_path(settings, model)
    return json.loads(path.read_text()) if path.is_file() else None


def _approved(settings: Settings, model: str, version: str | None) -> str:
    from mlflow.exceptions import MlflowException

    client, name = registry_client(settings), catalog_model(model).registered_name
    try:
        mv = client.get_model_version(name, version) if version else client.get_model_version_by_alias(name, "approved")
    except MlflowException as exc:
        raise PromotionError(f"{name}: no {'version ' + version if version else '`approved` version'} to promote "
                             "(run the evaluation gate first)") from exc  # fmt: skip
    if mv.tags.get("gate") != "passed":
        raise PromotionError(f"{name} v{mv.version} has not passed the gate (gate={mv.tags.get('gate', 'not run')})")
    return str(mv.version)


def await_online_store(settings: Settings, timeout_s: float, poll_s: float = 5.0, dataset: str = "sim") -> None:
    """Wait until the online store holds the features of the newest clean day.

    Materialization runs beside training (``materialize_features``), so a promotion can come before it ends; the
    staging service must not go live on older features, and the smoke test expects the newest day's users to be
    known. Raises :class:`PromotionError` after ``timeout_s`` with how far the store is loaded.
    """
    import time

    from pipelines.data.contract import Store, day_bounds
    from pipelines.features.store import get_store, materialized_through

    days = Store(settings.data_dir, dataset).partitions("impressions", layer="clean")
    if not days:
        return
    needed = day_bounds(days[-1])[1]
    store = get_store(settings, dataset)  # its feature view listing reads the registry afresh on every call
    deadline = time.monotonic() + timeout_s
    while True:
        through = materialized_through(store)
        if through is not None and through >= needed:
            return
        if time.monotonic() >= deadline:
            raise PromotionError(
                f"the online store holds features through {through or 'nothing yet'}, not through the newest clean "
                f"day {days[-1]} ({needed}); staging unchanged. Materialize it first (materialize_features, or "
                f"`coldstart features --date {days[-1]}`)"
            )
        log.info("waiting for the online store to hold %s (loaded through %s)", days[-1], through)
        time.sleep(poll_s)


def catch_up_nearline(settings: Settings, dataset: str = "sim", max_days: int = 2) -> list[dt.date]:
    """Run the near-line writer over the clean days after the near-line state's watermark, up to the newest clean
    ``impressions`` partition (at most its last ``max_days``); returns the days ingested.

    A deployment's writer runs continuously; promotion makes sure it has caught up before the staged ranker
    serves, so the items published after the recall indexes were built are in the state that ``/recommend``
    refreshes its indexes from (and guaranteed exposure counts what the logs say). :func:`~pipelines.serving.
    nearline_ingest.ingest_day` skips what the watermark says was ingested, so a re-run changes nothing.
    Author scores come from the Feast online store when it can be opened.
    """
    from pipelines.data.contract import Store, day_bounds
    from pipelines.serving.nearline import NearlineState
    from pipelines.serving.nearline_ingest import ingest_day
    from pipelines.serving.policies import PolicyConfig

    data = Store(settings.data_dir, dataset)
    days = data.partitions("impressions", layer="clean")[-max_days:]
    with NearlineState.open(settings, dataset, PolicyConfig(**settings.ranker_policies).exposure) as state:
        mark = state.watermark()
        todo = [d for d in days if mark is None or day_bounds(d)[1].timestamp() > mark]
        scores = _author_scores(settings, dataset) if todo else None
        for day in todo:
            counts = ingest_day(state, data, day, author_scores=scores)
            log.info("near-line state caught up on %s: %s", day, counts)
    return todo


def _author_scores(settings: Settings, dataset: str):
    """:func:`~pipelines.serving.nearline_ingest.feast_author_scores` on the profile's store, or None (the ticks
    then give every author the default score) when the store cannot be opened."""
    from pipelines.features.store import get_store
    from pipelines.serving.nearline_ingest import feast_author_scores

    try:
        return feast_author_scores(get_store(settings, dataset))
    except Exception as exc:  # noqa: BLE001 - any store failure leaves the default scores, with the reason
        log.warning("near-line catch-up without author scores: the Feast store did not open (%s)", exc)
        return None


def promote(
    settings: Settings,
    model: str,
    version: str | None = None,
    smoke: list[dict] | None = None,
    online_wait_s: float = ONLINE_WAIT_S,
) -> dict:
    """Promote ``version`` (default: the ``approved`` one) of ``model`` to staging; returns the staging record.

    ``smoke`` replaces the golden requests (tests use it to make the smoke test fail on purpose). A ranker waits
    up to ``online_wait_s`` for the online store to hold the newest clean day (:func:`await_online_store`).
    """
    entry = catalog_model(model)
    version = _approved(settings, model, version)
    client, name = registry_client(settings), entry.registered_name
    current = staging_record(settings, model)
    if current and str(current["version"]) == str(version) and smoke is None:
        # Already staging (a re-run of a finished day): nothing to build, nothing to move.
        log.info("%s v%s is already staging as %s", name, version, current["bento"])
        return current | {"unchanged": True}
    try:
        model_tag = import_model(settings, model, version)
        bento = build(settings, entry.family.bento_service, model_tag)
    except BentoError as exc:
        raise PromotionError(str(exc)) from exc
    if entry.family.reads_online_store:
        await_online_store(settings, online_wait_s)
    if entry.family.bento_service == "ranker" and settings.ranker_nearline:
        catch_up_nearline(settings)
    token = secrets.token_urlsafe(16)
    try:
        process, url = serve(settings, bento, token=token)
    except BentoError as exc:
        raise PromotionError(str(exc)) from exc
    try:
        golden = smoke if smoke is not None else entry.call("smoke_requests", settings, entry)
        failures = smoke_test(url, token, golden)
    finally:
        stop(process)
    if failures:
        raise PromotionError(f"smoke test of {bento} failed; staging unchanged:\n  - " + "\n  - ".join(failures))
    previous = staging_record(settings, model)
    record = {
        "model": model,
        "registered_model": name,
        "version": version,
        "bento": bento,
        "bento_model": model_tag,
        "promoted_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "history": ([{k: previous[k] for k in ("version", "bento", "promoted_at")}] + previous["history"]
                    if previous else []),
    }  # fmt: skip
    client.set_registered_model_alias(name, "staging", version)
    client.set_registered_model_alias(name, "champion", version)
    client.set_model_version_tag(name, version, "bento", bento)
    path = record_path(settings, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    log.info("promoted %s v%s to staging as %s", name, version, bento)
    return record


def rollback(settings: Settings, model: str) -> dict:
    """Put the previous staging version (and its bento) back; returns the new staging record."""
    current = staging_record(settings, model)
    if not current or not current["history"]:
        raise PromotionError(f"{catalog_model(model).registered_name}: no earlier staging version to roll back to")
    previous, *older = current["history"]
    client, name = registry_client(settings), catalog_model(model).registered_name
    client.set_registered_model_alias(name, "staging", previous["version"])
    client.set_registered_model_alias(name, "champion", previous["version"])
    record = {**current, **previous, "history": older, "rolled_back_from": current["version"],
              "promoted_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}  # fmt: skip
    record_path(settings, model).write_text(json.dumps(record, indent=2))
    return record
