"""The launcher without a running platform: its environment, its secrets, and the defined outcomes when nothing
runs or Airflow cannot be reached."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from pipelines.platform.launcher import (
    _write_state,
    celery_broker_url,
    components,
    down,
    platform_dir,
    platform_environ,
)
from pipelines.settings import get_settings

COLDSTART = str(Path(sys.executable).parent / "coldstart")


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([COLDSTART, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **env})


def test_local_profile_runs_the_local_executor_with_every_setting_and_shared_secrets(tmp_path: Path) -> None:
    settings = get_settings(home=tmp_path, airflow_port=18123)
    env = platform_environ(settings)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18123/execution/"
    # Every COLDSTART_* setting reaches the processes, whatever the caller's environment holds.
    assert env["COLDSTART_HOME"] == str(tmp_path) and env["COLDSTART_AIRFLOW_PORT"] == "18123"
    assert env["COLDSTART_POSTGRES_URL"] == settings.postgres_url
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"  # torch threads of a task sleep, not spin, beside other tasks
    secrets = platform_dir(settings) / "secrets.json"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert platform_environ(settings)["AIRFLOW__API_AUTH__JWT_SECRET"] == env["AIRFLOW__API_AUTH__JWT_SECRET"]
    names = [c.name for c in components(settings, workers=3)]
    assert names == ["airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "mlflow"]
    for component in components(settings):
        argv = " ".join(component.argv)
        # Servers on loopback; Airflow's log servers (no host setting: every interface) switched off.
        assert "--host 127.0.0.1" in argv or "--skip-serve-logs" in argv or "dag-processor" in argv, argv


def test_prod_profile_runs_celery_with_redis_and_its_own_airflow_database(tmp_path: Path) -> None:
    settings = get_settings(home=tmp_path, profile="prod", redis_url="redis://:pw@cache:6380/2",
                            postgres_url="postgresql+psycopg2://u:p@db:5432/cs", feast_project="team")  # fmt: skip
    env = platform_environ(settings)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert celery_broker_url(settings) == env["AIRFLOW__CELERY__BROKER_URL"] == "redis://:pw@cache:6380/3"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+postgresql+psycopg2://u:p@db:5432/cs_airflow"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql+psycopg2://u:p@db:5432/cs_airflow"
    assert env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX"] == "team:celery:"
    workers = [c for c in components(settings, workers=2) if c.name.startswith("airflow-worker")]
    assert [w.name for w in workers] == ["airflow-worker-1", "airflow-worker-2"]
    assert all("--skip-serve-logs" in w.argv for w in workers)


def test_down_signals_only_the_processes_up_started(tmp_path: Path) -> None:
    settings = get_settings(home=tmp_path)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        # A recorded PID now held by another process (started at another time) is left alone.
        entry = {"pid": bystander.pid, "argv": ["airflow"], "log": "-", "started": time.time() - 3600}
        _write_state(settings, {"components": {"airflow-scheduler": entry}})
        assert down(settings) == []
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_status_and_down_when_nothing_runs(tmp_path: Path) -> None:
    out = run("platform", "status", COLDSTART_HOME=str(tmp_path))
    assert out.returncode == 1 and "not running" in out.stdout, out.stdout + out.stderr
    out = run("platform", "status", "--json", COLDSTART_HOME=str(tmp_path))
    assert json.loads(out.stdout)["health"] == {}
    out = run("platform", "down", COLDSTART_HOME=str(tmp_path))
    assert out.returncode == 0 and "nothing was running" in out.stdout


def test_trigger_without_a_platform_is_a_clear_error(tmp_path: Path) -> None:
    out = run("platform", "trigger", "validate_logs", COLDSTART_HOME=str(tmp_path), COLDSTART_AIRFLOW_PORT="1")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "cannot reach Airflow at http://127.0.0.1:1" in out.stderr and "Traceback" not in out.stderr


def test_add_worker_needs_the_prod_profile(tmp_path: Path) -> None:
    out = run("platform", "add-worker", COLDSTART_HOME=str(tmp_path))
    assert out.returncode == 2 and "only the prod profile" in out.stderr
