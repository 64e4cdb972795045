"""A small client of Airflow 3's REST API, and a follower of the Asset-chained DAGs.

What the README's curl examples do (a token from ``/auth/token``, then ``/api/v2`` calls with it), for the demo,
the tests and the benchmarks: trigger a DAG with a conf, wait for a run, and follow everything the run set off
downstream through Assets until the chain is quiet.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

# The DAGs chained by Assets, in order: validate -> materialize -> train -> evaluate -> promote.
CHAIN = ("validate_logs", "materialize_features", "train_models", "evaluate_models", "promote_bento")
ACTIVE = {"queued", "running"}


class ChainError(RuntimeError):
    """Airflow cannot be reached or refused the login, a DAG is missing, or the chain did not finish in time."""


@dataclass
class AirflowClient:
    """Token-authenticated calls to ``<base_url>/api/v2`` (the simple auth manager's ``/auth/token``)."""

    base_url: str
    username: str
    password: str
    timeout: float = 30
    _token: str | None = field(default=None, repr=False)

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return httpx.request(method, url, timeout=self.timeout, **kwargs)
        except httpx.TransportError as exc:
            raise ChainError(f"cannot reach Airflow at {self.base_url} ({exc}): is the platform up? "
                             "(`coldstart platform status`)") from None  # fmt: skip

    def token(self) -> str:
        reply = self._send("POST", f"{self.base_url}/auth/token",
                           json={"username": self.username, "password": self.password})  # fmt: skip
        if reply.status_code in (401, 403):
            raise ChainError(f"Airflow at {self.base_url} refused the login of {self.username!r}: {reply.text[:200]}")
        reply.raise_for_status()
        self._token = reply.json()["access_token"]
        return self._token

    def call(self, method: str, path: str, body: dict | None = None, **params: Any) -> Any:
        """``method /api/v2<path>``; JSON in and out; raises ``httpx.HTTPStatusError`` with the body on failure."""
        for attempt in range(2):
            headers = {"Authorization": f"Bearer {self._token or self.token()}"}
            reply = self._send(method, f"{self.base_url}/api/v2{path}", json=body, params=params or None,
                               headers=headers)  # fmt: skip
            if reply.status_code == 401 and attempt == 0:  # the token expired: one fresh one
                self._token = None
                continue
            if reply.is_error:
                raise httpx.HTTPStatusError(f"{method} {path}: {reply.status_code} {reply.text[:1000]}",
                                            request=reply.request, response=reply)  # fmt: skip
            return reply.json() if reply.content else None
        raise AssertionError("unreachable")

    # ---- DAGs and runs ---------------------------------------------------------------------------------------

    def wait_for_dags(self, dag_ids: list[str] | tuple[str, ...], timeout: float = 180) -> None:
        """Until the dag-processor has parsed every DAG in ``dag_ids`` (and reported no import error)."""
        deadline = time.monotonic() + timeout
        while True:
            errors = self.call("GET", "/importErrors")
            if errors["total_entries"]:
                raise ChainError(f"DAG import errors: {errors['import_errors']}")
            known = {d["dag_id"] for d in self.call("GET", "/dags", limit=100)["dags"]}
            if set(dag_ids) <= known:
                return
            if time.monotonic() > deadline:
                raise ChainError(f"DAGs never appeared: {sorted(set(dag_ids) - known)}")
            time.sleep(2)

    def trigger(self, dag_id: str, conf: dict | None = None, note: str | None = None) -> dict:
        """A manual run of ``dag_id`` with ``conf`` (the DAG is unpaused first); returns the run."""
        self.call("PATCH", f"/dags/{dag_id}", {"is_paused": False})
        body = {"logical_date": None, "conf": conf or {}} | ({"note": note} if note else {})
        return self.call("POST", f"/dags/{dag_id}/dagRuns", body)

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.call("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")

    def runs_since(self, dag_id: str, since: dt.datetime) -> list[dict]:
        return self.call("GET", f"/dags/{dag_id}/dagRuns", run_after_gte=since.isoformat(), order_by="run_after",
                         limit=100)["dag_runs"]  # fmt: skip

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.call("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances",
                         limit=1000)["task_instances"]  # fmt: skip

    def task_log(self, ti: dict, try_number: int | None = None) -> str:
        """The log of a task try as the UI shows it (plain text)."""
        path = (f"/dags/{ti['dag_id']}/dagRuns/{quote(ti['dag_run_id'], safe='')}/taskInstances/{ti['task_id']}"
                f"/logs/{try_number or max(ti['try_number'], 1)}")  # fmt: skip
        body = self.call("GET", path, map_index=ti.get("map_index", -1), full_content="true")
        content = body.get("content", "")
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
        """Until the run is no longer queued or running; returns it."""
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
        """Asset events waiting to start a run of ``dag_id``."""
        try:
            return self.call("GET", f"/dags/{dag_id}/assets/queuedEvents")["total_entries"]
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:  # nothing queued
                return 0
            raise

    def follow(self, dag_ids: tuple[str, ...], since: dt.datetime, expect: tuple[str, ...] = (),
               timeout: float = 1800, poll: float = 3) -> dict[str, list[dict]]:  # fmt: skip
        """Wait until every DAG in ``expect`` has run since ``since`` (or a run failed, which may keep the rest
        from starting) and none of ``dag_ids`` has a run going or an Asset event waiting, three polls in a row;
        returns each DAG's runs since then.

        Failed runs are an outcome (a blocked gate), not an error: the caller reads their states.
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
    return dt.datetime.now(dt.UTC)
