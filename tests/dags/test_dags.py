"""DAG integrity: imports, tags, retries, no I/O at parse time, and a real `airflow dags test` run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
AIRFLOW = str(Path(sys.executable).parent / "airflow")
DAG_FILES = sorted(DAGS.glob("*.py"))


def airflow_env(home: Path, coldstart_home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "COLDSTART_HOME": str(coldstart_home),
        "COLDSTART_PROFILE": "local",
    }


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite metadata database, once per session."""
    home = tmp_path_factory.mktemp("airflow")
    env = airflow_env(home, home / "unused")
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    return home


@pytest.fixture(scope="session")
def dagbag(airflow_home: Path):
    os.environ.setdefault("AIRFLOW_HOME", str(airflow_home))
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_dagbag_imports_without_errors(dagbag) -> None:
    assert DAG_FILES, "no DAG files found"
    assert dagbag.import_errors == {}
    assert "validate_logs" in dagbag.dag_ids


def test_every_dag_has_tags_retries_and_docs(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, dag_id
        assert dag.doc_md, dag_id
        assert dag.default_args.get("retries", 0) >= 2, dag_id
        for task in dag.tasks:
            gate = task.task_id.endswith("_gate")  # gates fail deliberately and must not retry
            assert gate or task.retries >= 2, f"{dag_id}.{task.task_id}"


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_parsing_makes_no_connection_or_database_call(dag_file: Path, tmp_path: Path) -> None:
    probe = f"""
import socket, sqlite3, sys, runpy
def refuse(*a, **k):
    raise AssertionError("DAG parsing opened a connection")
socket.socket.connect = refuse
socket.create_connection = refuse
sqlite3.connect = refuse
runpy.run_path({str(dag_file)!r})
heavy = sorted(m for m in ("torch", "pandas", "mlflow", "feast", "bentoml", "great_expectations") if m in sys.modules)
assert not heavy, f"heavy modules imported at parse time: {{heavy}}"
"""
    env = airflow_env(tmp_path / "airflow", tmp_path / "home")
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{tmp_path}/absent/airflow.db"  # any connect() is refused
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert not (tmp_path / "home").exists()


@pytest.mark.slow
def test_airflow_dags_test_validate_logs(airflow_home: Path, tmp_path: Path) -> None:
    from ..conftest import run_sim

    home = tmp_path / "coldstart"
    run_sim(home / "data", days=1, users=800)
    env = airflow_env(airflow_home, home)
    out = subprocess.run(
        [AIRFLOW, "dags", "test", "validate_logs", "2026-01-01"], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert "state=success" in (out.stdout + out.stderr) or "success" in out.stdout.lower()
    summary = home / "reports" / "validation" / "sim" / "2026-01-01.json"
    assert summary.is_file()
    assert (home / "data" / "sim" / "clean" / "impressions" / "date=2026-01-01" / "part-0.parquet").is_file()
