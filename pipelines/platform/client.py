"""Airflow 3's REST API through its official client, and a follower of the Asset-chained DAGs.

The calls go through ``apache-airflow-client`` (the pinned Airflow's own generated client); what no library has
is here: trigger a DAG with a conf, wait for a run, follow everything it set off downstream through Assets until
the chain is quiet, and say why a run failed. Runs and task instances come back as the REST API's JSON (dicts).

Errors: Airflow refusing a request raises the client's ``ApiException`` (``NotFoundException`` for an unknown DAG,
``BadRequestException`` for a conf its Params reject, ...); an unreachable Airflow or a refused login raises
``ChainError``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import urllib3
from airflow_client.client import (
    ApiClient,
    AssetApi,
    Configuration,
    DAGApi,
    DAGPatchBody,
    DagRunApi,
    ImportErrorApi,
    TaskInstanceApi,
    TriggerDAGRunPostBody,
)
from airflow_client.client.exceptions import ForbiddenException, NotFoundException, UnauthorizedException
from pydantic import BaseModel

# The DAGs chained by Assets, in order: validate -> materialize -> train -> evaluate -> promote.
CHAIN = ("validate_logs", "materialize_features", "train_models", "evaluate_models", "promote_bento")
ACTIVE = {"queued", "running"}
AUTH = ["OAuth2PasswordBearer", "HTTPBearer"]  # the bearer schemes of Airflow's spec, as the generated APIs name them

T = TypeVar("T")


class ChainError(RuntimeError):
    """Airflow cannot be reached or refused the login, a DAG is missing, or the chain did not finish in time."""


def _json(model: BaseModel) -> dict:
    """A response model as the REST API's JSON: ISO date strings, null fields kept (``to_dict`` drops them)."""
    return model.model_dump(mode="json", by_alias=True)


@dataclass
class AirflowClient:
    """Token-authenticated calls to ``<base_url>/api/v2`` (the simple auth manager's ``/auth/token``)."""

    base_url: str
    username: str
    password: str
    timeout: float = 30
    _api: ApiClient = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._api = ApiClient(Configuration(host=self.base_url))
        self._dags = DAGApi(self._api)
        self._runs = DagRunApi(self._api)
        self._tis = TaskInstanceApi(self._api)
        self._assets = AssetApi(self._api)
        self._import_errors = ImportErrorApi(self._api)

    def _unreachable(self, exc: urllib3.exceptions.HTTPError) -> ChainError:
        return ChainError(f"cannot reach Airflow at {self.base_url} ({exc}): is the platform up? "
                          "(`coldstart platform status`)")  # fmt: skip

    def _send(self, request: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``request`` (a generated API method, or ``_raw``) with a token, renewed once if it expired."""
        for attempt in range(2):
            if self._api.configuration.access_token is None:
                self.token()
            try:
                # float(): the generated methods validate the timeout as a strict float (an int is refused).
                return request(*args, _request_timeout=float(self.timeout), **kwargs)
            except UnauthorizedException:
                if attempt:
                    raise
                self._api.configuration.access_token = None
            except urllib3.exceptions.HTTPError as exc:
                raise self._unreachable(exc) from None
        raise AssertionError("unreachable")

    def _raw(self, method: str, path: str, body: Any = None, params: dict | None = None, auth: bool = True,
             _request_timeout: float | None = None) -> Any:  # fmt: skip
        """``method <base_url><path>`` on the client's transport, JSON in and out; ``ApiException`` on an error."""
        headers = {"Accept": "application/json"} | ({"Content-Type": "application/json"} if body is not None else {})
        query = list((params or {}).items()) or None
        request = self._api.param_serialize(
            method, path, query_params=query, header_params=headers, body=body, auth_settings=AUTH if auth else None
        )
        reply = self._api.call_api(*request, _request_timeout=_request_timeout)
        reply.read()
        return self._api.response_deserialize(reply, {"2XX": "object"}).data

    def token(self) -> str:
        """A fresh access token (a JWT) for ``username``; the client sends it from then on.

        ``POST /auth/token`` belongs to the simple auth manager, not to the REST API's spec, so the generated
        client has no method for it.

        Raises:
            ChainError: Airflow cannot be reached or refused the login.
        """
        body = {"username": self.username, "password": self.password}
        try:
            reply = self._raw("POST", "/auth/token", body, auth=False, _request_timeout=float(self.timeout))
        except (UnauthorizedException, ForbiddenException) as exc:
            raise ChainError(f"Airflow at {self.base_url} refused the login of {self.username!r}: "
                             f"{(exc.body or '')[:200]}") from None  # fmt: skip
        except urllib3.exceptions.HTTPError as exc:
            raise self._unreachable(exc) from None
        self._api.configuration.access_token = reply["access_token"]
        return reply["access_token"]

    def call(self, method: str, path: str, body: dict | None = None, **params: Any) -> Any:
        """``method /api/v2<path>`` with ``params`` in the query, for endpoints with no method here.

        Raises:
            ApiException: Airflow refused the request (status and body on the exception).
        """
        return self._send(self._raw, method, f"/api/v2{path}", body, params)

    # ---- DAGs and runs ---------------------------------------------------------------------------------------

    def wait_for_dags(self, dag_ids: list[str] | tuple[str, ...], timeout: float = 180) -> None:
        """Wait until the dag-processor has parsed every DAG in ``dag_ids``.

        Raises:
            ChainError: a DAG file failed to import, or a DAG did not appear within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            errors = self._send(self._import_errors.get_import_errors)
            if errors.total_entries:
                raise ChainError(f"DAG import errors: {[_json(e) for e in errors.import_errors]}")
            known = {d.dag_id for d in self._send(self._dags.get_dags, limit=100).dags}
            if set(dag_ids) <= known:
                return
            if time.monotonic() > deadline:
                raise ChainError(f"DAGs never appeared: {sorted(set(dag_ids) - known)}")
            time.sleep(2)

    def trigger(self, dag_id: str, conf: dict | None = None, note: str | None = None) -> dict:
        """Start a manual run of ``dag_id`` with ``conf``, unpausing the DAG first (new DAGs start paused).

        Returns:
            The run, as the REST API's JSON.
        """
        self._send(self._dags.patch_dag, dag_id, DAGPatchBody(is_paused=False))
        # The body always carries `logical_date: null` (the client's model adds it): without it Airflow answers 422.
        body = TriggerDAGRunPostBody(conf=conf or {}, note=note)
        return _json(self._send(self._runs.trigger_dag_run, dag_id, body))

    def run(self, dag_id: str, run_id: str) -> dict:
        """The run ``run_id`` of ``dag_id``."""
        return _json(self._send(self._runs.get_dag_run, dag_id, run_id))

    def runs_since(self, dag_id: str, since: dt.datetime) -> list[dict]:
        """The runs of ``dag_id`` to run at or after ``since``, oldest first."""
        runs = self._send(self._runs.get_dag_runs, dag_id, run_after_gte=since, order_by=["run_after"], limit=100)
        return [_json(r) for r in runs.dag_runs]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """The task instances of a run (one per map index of a mapped task)."""
        tis = self._send(self._tis.get_task_instances, dag_id, run_id, limit=1000)
        return [_json(ti) for ti in tis.task_instances]

    def task_log(self, ti: dict, try_number: int | None = None) -> str:
        """The log of a task try (by default its last) as the UI shows it, as plain text."""
        # Not TaskInstanceApi.get_log: its StructuredLogMessage model drops every key but `event` and `timestamp`,
        # and with them the `error_detail` that holds a failed task's exception.
        path = (f"/dags/{ti['dag_id']}/dagRuns/{quote(ti['dag_run_id'], safe='')}/taskInstances/{ti['task_id']}"
                f"/logs/{try_number or max(ti['try_number'], 1)}")  # fmt: skip
        content = self.call("GET", path, map_index=ti.get("map_index", -1), full_content="true").get("content", "")
        if not isinstance(content, list):
            return str(content)
        lines = []
        for entry in content:
            if not isinstance(entry, dict):
                lines.append(str(entry))
                continue
            lines.append(str(entry.get("event", "")))
            # An exception is logged as structured detail, which the UI renders under the event.
            for error in entry.get("error_detail") or []:
                lines.append(f"{error.get('exc_type')}: {error.get('exc_value')}")
        return "\n".join(lines)

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 900, poll: float = 2) -> dict:
        """Wait until the run is no longer queued or running, and return it.

        Raises:
            ChainError: the run was still going after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while (run := self.run(dag_id, run_id))["state"] in ACTIVE:
            if time.monotonic() > deadline:
                raise ChainError(f"{dag_id} run {run_id} still {run['state']} after {timeout:.0f} s")
            time.sleep(poll)
        return run

    def failure(self, run: dict) -> str:
        """What went wrong in a run: each failed task with the end of its log."""
        lines = [f"{run['dag_id']} run {run['dag_run_id']} {run['state']}:"]
        for ti in self.task_instances(run["dag_id"], run["dag_run_id"]):
            if ti["state"] in ("failed", "upstream_failed"):
                tail = self.task_log(ti).strip().splitlines()[-15:] if ti["state"] == "failed" else []
                lines.append(f"  {ti['task_id']}[{ti.get('map_index', -1)}] {ti['state']}")
                lines += [f"    {line}" for line in tail]
        return "\n".join(lines)

    def queued_asset_events(self, dag_id: str) -> int:
        """The number of Asset events waiting to start a run of ``dag_id``."""
        try:
            return self._send(self._assets.get_dag_asset_queued_events, dag_id).total_entries
        except NotFoundException:  # nothing queued
            return 0

    def follow(self, dag_ids: tuple[str, ...], since: dt.datetime, expect: tuple[str, ...] = (),
               timeout: float = 1800, poll: float = 3) -> dict[str, list[dict]]:  # fmt: skip
        """Wait until the chain that ``dag_ids`` make is quiet, and return each DAG's runs since ``since``.

        Quiet: every DAG in ``expect`` has run since ``since`` (or a run failed, which may keep the rest from
        starting) and none of ``dag_ids`` has a run going or an Asset event waiting, three polls in a row. Failed
        runs are an outcome (a blocked gate), not an error: the caller reads their states.

        Raises:
            ChainError: the chain was not quiet after ``timeout`` seconds.
        """
        deadline, quiet = time.monotonic() + timeout, 0
        while True:
            runs = {dag: self.runs_since(dag, since) for dag in dag_ids}
            busy = any(r["state"] in ACTIVE for rs in runs.values() for r in rs)
            busy |= any(self.queued_asset_events(dag) for dag in dag_ids)
            failed = any(r["state"] == "failed" for rs in runs.values() for r in rs)
            missing = [] if failed else [dag for dag in expect if not runs[dag]]
            quiet = 0 if busy or missing else quiet + 1
            if quiet >= 3:
                return runs
            if time.monotonic() > deadline:
                going = {dag: [r["state"] for r in rs] for dag, rs in runs.items()}
                raise ChainError(f"the chain did not settle within {timeout:.0f} s: {going}, missing {missing}")
            time.sleep(poll)


def now() -> dt.datetime:
    """The current time in UTC (what ``follow``'s ``since`` compares with ``run_after``)."""
    return dt.datetime.now(dt.UTC)
