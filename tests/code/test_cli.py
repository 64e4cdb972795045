"""The `coldstart` CLI, run as a user would run it (a subprocess of the installed entry point)."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

# The entry point installed beside the interpreter running the tests.
COLDSTART = str(Path(sys.executable).parent / "coldstart")


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    assert Path(COLDSTART).is_file(), f"the `coldstart` entry point is not installed at {COLDSTART}"
    return subprocess.run([COLDSTART, *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=300)


def test_help_lists_the_stages() -> None:
    out = run("--help")
    assert out.returncode == 0
    for command in (
        "simulate",
        "ingest",
        "validate",
        "features",
        "train",
        "evaluate",
        "champion",
        "ab",
        "doctor",
        "demo",
    ):
        assert command in out.stdout


def test_unknown_profile_exits_with_a_clear_message() -> None:
    out = run("simulate", "--days", "1", "--users", "50", COLDSTART_PROFILE="staging")
    assert out.returncode == 2
    assert "COLDSTART_PROFILE" in out.stderr and "staging" in out.stderr
    assert "Traceback" not in out.stderr


def test_unwritable_home_exits_with_a_clear_message(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = run("simulate", "--days", "1", "--users", "50", COLDSTART_HOME=str(blocker / "home"))
    assert out.returncode == 2
    assert "not writable" in out.stderr and "Traceback" not in out.stderr


def test_bad_option_is_rejected_before_anything_is_written(_isolated_home: Path) -> None:
    out = run("simulate", "--days", "1", "--users", "50", "--policy", "loudest")
    assert out.returncode == 2
    assert not (_isolated_home / "data").exists()


@pytest.mark.slow
def test_simulate_twice_gives_identical_files(tmp_path: Path) -> None:
    """The acceptance command: `coldstart simulate --days 14 --users 20000 --seed 7`, twice."""
    digests = []
    for name in ("first", "second"):
        home = tmp_path / name
        out = run("simulate", "--days", "14", "--users", "20000", "--seed", "7", COLDSTART_HOME=str(home))
        assert out.returncode == 0, out.stderr
        files = sorted((home / "data").rglob("*.parquet"))
        assert len(files) == 14 * 6 + 2
        digests.append({str(f.relative_to(home)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files})
    assert digests[0] == digests[1]


def test_info_reports_partitions(_isolated_home: Path) -> None:
    assert run("simulate", "--days", "2", "--users", "300").returncode == 0
    out = run("info", "--json")
    assert out.returncode == 0
    assert '"raw/impressions": "2026-01-01..2026-01-02 (2)"' in out.stdout.replace("\n", "").replace("  ", "")


def test_evaluate_without_a_candidate_or_with_a_bad_slice_is_a_clear_error(_isolated_home: Path) -> None:
    out = run("evaluate", "--model", "esmm")
    assert out.returncode == 2 and "no version with alias 'candidate'" in out.stderr, out.stderr
    out = run("evaluate", "--model", "esmm", "--slices", '{"exposure_edges": [100, 10]}')
    assert out.returncode == 2 and "exposure_edges must be positive and strictly increasing" in out.stderr, out.stderr
    out = run("champion", "esmm")
    assert out.returncode == 2 and "no `approved` version" in out.stderr, out.stderr


def test_every_command_module_registers_its_commands_in_help_order() -> None:
    """`pipelines.cli` registers the commands by importing one module per stage: a dropped import loses commands."""
    import typer.main

    from pipelines.cli import app

    group = typer.main.get_command(app)
    assert list(group.commands) == [
        "simulate", "validate", "features", "train", "evaluate", "champion", "promote", "rollback", "serve", "ab",
        "experiment", "lookup", "feast", "airflow", "doctor", "info", "demo", "ingest", "platform",
    ]  # fmt: skip
    assert list(group.commands["ingest"].commands) == ["movielens"]
    assert list(group.commands["platform"].commands) == ["up", "down", "status", "add-worker", "trigger"]
