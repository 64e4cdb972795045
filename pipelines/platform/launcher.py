"""`coldstart platform up|down|status`: the platform as a service on 127.0.0.1.

Starts Airflow's components (api-server, scheduler, dag-processor, triggerer; in ``prod`` also Celery workers)
and the MLflow server, each in its own process group with its log under ``COLDSTART_HOME/platform/logs``, and
records them in ``COLDSTART_HOME/platform/state.json`` so that ``down`` stops exactly the processes ``up``
started (a PID is only signalled while its command line is still the one recorded).

Every server listens on 127.0.0.1 only: the api-server and MLflow get ``--host 127.0.0.1``; the scheduler,
triggerer and workers run with ``--skip-serve-logs`` (Airflow's log servers have no host setting and would bind
every interface); task logs are read from ``AIRFLOW_HOME/logs`` by the api-server instead.

Profiles: ``local`` runs the LocalExecutor on the SQLite metadata database; ``prod`` runs the CeleryExecutor
with Redis as the broker (database ``n + 1`` of ``COLDSTART_REDIS_URL``, keys under the Feast project's
prefix) and PostgreSQL for Airflow's metadata, Celery's results and MLflow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.settings import ENV_PREFIX, Settings

log = logging.getLogger(__name__)

ADMIN_USER = "admin"
CORE_COMPONENTS = ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "mlflow")
# Airflow's health endpoint names these components (`dag_processor` only when it runs standalone).
HEALTH_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


class PlatformError(RuntimeError):
    """Raised when the platform cannot be started, or a component dies or never becomes healthy."""


@dataclass(frozen=True)
class Component:
    """One process of the platform."""

    name: str
    argv: list[str]


def platform_dir(settings: Settings) -> Path:
    return settings.home / "platform"


def state_path(settings: Settings) -> Path:
    return platform_dir(settings) / "state.json"


def _bin(name: str) -> str:
    """An executable of this environment (the venv's bin need not be on PATH)."""
    return str(Path(sys.executable).parent / name)


def airflow_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.airflow_port}"


def mlflow_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.mlflow_port}"


def _secrets(settings: Settings) -> dict[str, str]:
    """Keys every Airflow component must share, generated once per COLDSTART_HOME (file mode 0600)."""
    path = platform_dir(settings) / "secrets.json"
    if path.is_file():
        return json.loads(path.read_text())
    from cryptography.fernet import Fernet

    values = {
        "jwt_secret": secrets.token_hex(32),
        "api_secret_key": secrets.token_hex(32),
        "fernet_key": Fernet.generate_key().decode(),
        "admin_password": secrets.token_urlsafe(12),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(values, indent=2))
    return values


def passwords_file(settings: Settings) -> Path:
    return settings.airflow_home / "simple_auth_manager_passwords.json"


def admin_password(settings: Settings) -> str:
    """The Airflow UI / REST API password of ``admin`` (generated at the first ``up``)."""
    return _secrets(settings)["admin_password"]


def celery_broker_url(settings: Settings) -> str:
    """Redis database ``n + 1`` of ``COLDSTART_REDIS_URL`` (Feast's online store keeps database ``n``)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(settings.redis_url)
    db = int((parts.path or "/0").lstrip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{db + 1}"))


def platform_environ(settings: Settings) -> dict[str, str]:
    """The environment of every platform process: ``Settings.airflow_environ()`` plus what a running Airflow 3
    needs (executor, execution API address, shared secrets, the simple auth manager's user)."""
    keys = _secrets(settings)
    env = {
        # Every COLDSTART_* setting, not only what Airflow needs: tasks and later workers must read the settings the
        # platform was started with, whatever the environment of whoever starts them.
        **settings.environ(),
        **settings.airflow_environ(),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if settings.profile == "prod" else "LocalExecutor",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{airflow_url(settings)}/execution/",
        "AIRFLOW__API__BASE_URL": airflow_url(settings),
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
        "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
        "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(settings)),
        # Every DAG is scheduled on Assets or triggered by hand: none runs on its own when it appears.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        # Two cores: a few tasks at a time (training tasks are CPU-bound and run one model at a time anyway).
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "BENTOML_HOME": str(settings.home / "bentoml"),  # the store promote_bento builds into, as in compose
        "BENTOML_DO_NOT_TRACK": "true",
        # MLflow 3's server otherwise forks seven job consumers (~240 MB each) for GenAI jobs the platform never runs.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        # torch's OpenMP threads sleep while they wait instead of spinning. Two training threads beside any other
        # busy process (an evaluation, the scheduler) on two cores spin against each other: PLE+UIE's step took
        # 3.1x as long as on a quiet machine, against 1.5x passive (and 7 % more when quiet; see
        # benchmarks/train_step.py). Set it to override.
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    if settings.profile == "prod":
        env |= {
            "AIRFLOW__CELERY__BROKER_URL": celery_broker_url(settings),
            # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3: keep the named driver.
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{settings.airflow_db_url}",
            # The broker's keys under the platform's own prefix: one Redis can serve several platforms.
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": f"{settings.feast_project}:celery:",
            # Tasks per worker (training is CPU-bound): set the variable to change it.
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": os.environ.get("AIRFLOW__CELERY__WORKER_CONCURRENCY", "2"),
        }
    return env


def components(settings: Settings, workers: int = 1) -> list[Component]:
    """The processes of the profile (Celery workers only in ``prod``)."""
    airflow = _bin("airflow")
    out = [
        Component("airflow-api-server", [airflow, "api-server", "--host", "127.0.0.1", "--port",
                                         str(settings.airflow_port), "--workers", "1"]),
        Component("airflow-scheduler", [airflow, "scheduler", "--skip-serve-logs"]),
        Component("airflow-dag-processor", [airflow, "dag-processor"]),
        Component("airflow-triggerer", [airflow, "triggerer", "--skip-serve-logs"]),
        Component("mlflow", [_bin("mlflow"), "server", "--backend-store-uri", settings.mlflow_tracking_uri,
                             "--default-artifact-root", settings.mlflow_artifact_root.as_uri(),
                             "--host", "127.0.0.1", "--port", str(settings.mlflow_port), "--workers", "1"]),
    ]  # fmt: skip
    if settings.profile == "prod":
        out += [worker_component(n) for n in range(1, workers + 1)]
    return out


def worker_component(n: int) -> Component:
    """Celery worker ``n`` (its node name ``worker<n>@<host>`` tells the workers apart in logs and Flower)."""
    return Component(f"airflow-worker-{n}", [_bin("airflow"), "celery", "worker", "--skip-serve-logs",
                                             "--celery-hostname", f"worker{n}@%h"])  # fmt: skip


# ---- state ---------------------------------------------------------------------------------------------------


def read_state(settings: Settings) -> dict[str, Any]:
    path = state_path(settings)
    return json.loads(path.read_text()) if path.is_file() else {"components": {}}


def _write_state(settings: Settings, state: dict[str, Any]) -> None:
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


def _process(entry: dict[str, Any]):
    """The live process of a recorded component, or None (gone, or its PID now belongs to something else)."""
    import psutil

    try:
        process = psutil.Process(entry["pid"])
        if process.status() == psutil.STATUS_ZOMBIE or abs(process.create_time() - entry["started"]) > 1:
            return None
        return process
    except psutil.NoSuchProcess:
        return None


def alive(entry: dict[str, Any]) -> bool:
    return _process(entry) is not None


# ---- up / down / status ----------------------------------------------------------------------------------------


def _prepare(settings: Settings, env: dict[str, str]) -> None:
    """Metadata database (created in prod, migrated), the admin's password file."""
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    settings.mlflow_artifact_root.mkdir(parents=True, exist_ok=True)
    if settings.profile == "prod":
        from pipelines.services import ensure_postgres_database

        ensure_postgres_database(settings.airflow_db_url)
        ensure_postgres_database(settings.postgres_url)
    out = subprocess.run([_bin("airflow"), "db", "migrate"], env={**os.environ, **env}, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    if out.returncode != 0:
        raise PlatformError(f"`airflow db migrate` failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    path = passwords_file(settings)
    path.touch(mode=0o600)
    path.write_text(json.dumps({ADMIN_USER: admin_password(settings)}))


def _start(settings: Settings, component: Component, env: dict[str, str]) -> dict[str, Any]:
    logs = platform_dir(settings) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{component.name}.log"
    with log_path.open("ab") as out:
        # The caller's COLDSTART_* variables stay out (a serving knob such as COLDSTART_RANKER_FEATURES left in a
        # shell or a test session would change what the platform's tasks do): the platform's settings are `env`.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        process = subprocess.Popen(
            component.argv,
            env={**inherited, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: `down` stops it with everything it forked
            cwd=settings.home,
        )
    import psutil

    return {"pid": process.pid, "argv": component.argv, "log": str(log_path),
            "started": psutil.Process(process.pid).create_time()}  # fmt: skip


def up(settings: Settings, workers: int = 1, timeout: float = 300) -> dict[str, Any]:
    """Start every component that is not already running, wait until all are healthy; return the state.

    Raises:
        PlatformError: a component exited, or the platform was not healthy within ``timeout`` seconds.
    """
    settings.ensure_home()
    env = platform_environ(settings)
    state = read_state(settings)
    running = {name: entry for name, entry in state["components"].items() if alive(entry)}
    if state.get("profile") not in (None, settings.profile) and running:
        raise PlatformError(f"a {state['profile']} platform is running in {settings.home}: `coldstart platform down`")
    if not running:
        _prepare(settings, env)
    state = {"profile": settings.profile, "home": str(settings.home), "airflow": airflow_url(settings),
             "mlflow": mlflow_url(settings), "components": dict(running)}  # fmt: skip
    try:
        for component in components(settings, workers):
            if component.name not in running:
                state["components"][component.name] = _start(settings, component, env)
                _write_state(settings, state)  # at once: `down` must find it even if this process dies now
                log.info("started %s (pid %s)", component.name, state["components"][component.name]["pid"])
        _write_state(settings, state)
        wait_healthy(settings, timeout)
    except BaseException:
        _write_state(settings, state)  # so that `down` can stop what did start
        raise
    return state


def add_worker(settings: Settings, timeout: float = 120) -> str:
    """Start one more Celery worker (prod); returns its component name once it answers a ping."""
    if settings.profile != "prod":
        raise PlatformError("only the prod profile (CeleryExecutor) has workers to add")
    state = read_state(settings)
    taken = {name for name in state["components"] if name.startswith("airflow-worker-")}
    n = next(i for i in range(1, len(taken) + 2) if f"airflow-worker-{i}" not in taken)
    component = worker_component(n)
    state["components"][component.name] = _start(settings, component, platform_environ(settings))
    _write_state(settings, state)
    _wait(lambda: _worker_ready(settings, n), f"{component.name} to join", settings, timeout)
    return component.name


def _worker_ready(settings: Settings, n: int) -> bool:
    log_path = platform_dir(settings) / "logs" / f"airflow-worker-{n}.log"
    text = log_path.read_text(errors="replace") if log_path.is_file() else ""
    return f"worker{n}@" in text and " ready." in text


def health(settings: Settings) -> dict[str, str]:
    """Component -> 'healthy' / 'unhealthy' / 'down', from Airflow's and MLflow's health endpoints."""
    import httpx

    out = dict.fromkeys(HEALTH_COMPONENTS, "down") | {"api-server": "down", "mlflow": "down"}
    with contextlib.suppress(httpx.HTTPError, ValueError):
        body = httpx.get(f"{airflow_url(settings)}/api/v2/monitor/health", timeout=5).json()
        out["api-server"] = "healthy"
        for name in HEALTH_COMPONENTS:
            out[name] = (body.get(name) or {}).get("status") or "down"
    with contextlib.suppress(httpx.HTTPError):
        out["mlflow"] = "healthy" if httpx.get(f"{mlflow_url(settings)}/health", timeout=5).status_code == 200 else (
            "unhealthy")  # fmt: skip
    return out


def _wait(ready, what: str, settings: Settings, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        dead = [name for name, entry in read_state(settings)["components"].items() if not alive(entry)]
        if dead:
            logs = platform_dir(settings) / "logs"
            raise PlatformError(f"{', '.join(dead)} exited while waiting for {what}; see {logs}/<name>.log")
        if time.monotonic() > deadline:
            raise PlatformError(f"timed out after {timeout:.0f} s waiting for {what}: {health(settings)}")
        time.sleep(1)


def wait_healthy(settings: Settings, timeout: float = 300) -> None:
    _wait(lambda: set(health(settings).values()) == {"healthy"}, "the platform to be healthy", settings, timeout)


def down(settings: Settings, timeout: float = 60) -> list[str]:
    """Stop every recorded component (its process group and whatever it forked); returns what was stopped."""
    import psutil

    state = read_state(settings)
    stopped, processes = [], {}
    for name, entry in state["components"].items():
        process = _process(entry)
        if process is None:
            continue
        with contextlib.suppress(psutil.NoSuchProcess):
            # Servers fork workers that may leave the group (gunicorn, uvicorn): remember every descendant.
            processes[name] = [process, *process.children(recursive=True)]
            os.killpg(entry["pid"], signal.SIGTERM)
            stopped.append(name)
    everything = [p for group in processes.values() for p in group]
    _, survivors = psutil.wait_procs(everything, timeout=timeout)
    for process in survivors:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(survivors, timeout=10)
    _write_state(settings, {**state, "components": {}})
    return stopped


def status(settings: Settings) -> dict[str, Any]:
    """Recorded components with their PID and whether they run, health, URLs and the login."""
    state = read_state(settings)
    procs = {name: {"pid": entry["pid"], "running": alive(entry), "log": entry["log"]}
             for name, entry in state["components"].items()}  # fmt: skip
    running = any(p["running"] for p in procs.values())
    return {
        "profile": settings.profile,
        "home": str(settings.home),
        "components": procs,
        "health": health(settings) if running else {},
        "airflow": airflow_url(settings),
        "mlflow": mlflow_url(settings),
        "login": {"username": ADMIN_USER, "password": admin_password(settings)} if running else None,
    }
