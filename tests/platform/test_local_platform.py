"""The platform as users run it (local profile): `coldstart platform up`, the real scheduler, the REST API.

One platform serves the module. The Asset chain runs once over its days (the ``chain`` fixture), and every test
that needs its outputs (validated days, features, a staged champion) asks for it, so that any subset of the tests
runs on its own: a re-run of the same days, a killed training task, a blocked gate, a failed smoke test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pipelines.platform.client import CHAIN, now
from pipelines.serving.bento import serve, stop
from pipelines.serving.promote import staging_record

from .conftest import TEST_CHAIN, Platform, chain_conf, failures, local_state, run_chain, states

pytestmark = pytest.mark.slow


def _alias(platform: Platform, alias: str) -> str:
    import mlflow

    mlflow.set_tracking_uri(platform.settings.mlflow_tracking_uri)
    return str(mlflow.MlflowClient().get_model_version_by_alias("coldstart_esmm", alias).version)


@pytest.fixture(scope="module")
def chain(local_platform: Platform) -> dict[str, list[dict]]:
    """The runs of the whole Asset chain over the platform's days, triggered once for the module."""
    return run_chain(local_platform, timeout=1200)


def test_status_reports_every_component_on_loopback(local_platform: Platform) -> None:
    coldstart = str(Path(sys.executable).parent / "coldstart")
    out = subprocess.run([coldstart, "platform", "status", "--json"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **local_platform.env})  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    info = json.loads(out.stdout)
    assert set(info["health"].values()) == {"healthy"}, info["health"]
    assert all(c["running"] for c in info["components"].values())
    assert info["airflow"] == f"http://127.0.0.1:{local_platform.settings.airflow_port}"
    # Nothing the platform started listens beyond 127.0.0.1 (no log server on every interface).
    import psutil

    pids = set()
    for entry in info["components"].values():
        process = psutil.Process(entry["pid"])
        pids |= {process.pid, *(c.pid for c in process.children(recursive=True))}
    listening = [c for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening), listening


def test_the_asset_chain_runs_under_the_scheduler(local_platform: Platform, chain: dict[str, list[dict]]) -> None:
    client, settings, days = local_platform.client, local_platform.settings, local_platform.days
    assert states(chain) == {dag: ["success"] for dag in CHAIN}, failures(client, chain)
    assert [chain[dag][0]["run_type"] for dag in CHAIN] == ["manual"] + ["asset_triggered"] * 4
    # Every day the trigger named went through validation and features, not only the last.
    for day in days:
        assert (settings.reports_dir / "validation" / "sim" / f"{day}.json").is_file()
        assert (settings.home / "features" / "sim" / "item_stats" / f"{day}.parquet").is_file()
    # Trained on the days before the last (chain override: esmm only), evaluated on the last, promoted.
    record = staging_record(settings, "esmm")
    assert record and record["version"] == _alias(local_platform, "candidate") == _alias(local_platform, "staging")
    assert staging_record(settings, "ple") is None

    # The staging ranker answers.
    process, url = serve(settings, record["bento"], token="t0ken")
    try:
        body = {"user_id": 3, "candidates": [1, 2, 3, 999_999], "k": 3}
        answer = httpx.post(f"{url}/rank", json=body, headers={"Authorization": "Bearer t0ken"}, timeout=30)
    finally:
        stop(process)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["items"]) == 3


def test_rerunning_finished_days_changes_nothing(local_platform: Platform, chain: dict[str, list[dict]]) -> None:
    client, settings = local_platform.client, local_platform.settings
    assert states(chain) == {dag: ["success"] for dag in CHAIN}, failures(client, chain)
    before = local_state(settings)
    since = now()
    client.trigger("validate_logs", chain_conf(local_platform.days))
    runs = client.follow(CHAIN, since, expect=CHAIN, timeout=1200)
    assert states(runs) == {dag: ["success"] for dag in CHAIN}
    after = local_state(settings)
    assert after == before, {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
                             if before.get(k) != after.get(k)}  # fmt: skip


def test_a_killed_training_task_is_retried_and_the_chain_completes(
    local_platform: Platform, chain: dict[str, list[dict]]
) -> None:
    client, settings = local_platform.client, local_platform.settings
    # Training reads the features the chain computed over the days, and evaluation compares with its champion.
    assert states(chain) == {dag: ["success"] for dag in CHAIN}, failures(client, chain)
    checkpoints = settings.home / "checkpoints"
    since = now()
    # The chain's own config, trained again: after the kill it resumes from its checkpoint to the same weights.
    conf = TEST_CHAIN["train_models"] | {"retrain": True, "date": local_platform.days[-1].isoformat(),
                                         "chain": {"evaluate_models": TEST_CHAIN["evaluate_models"]}}  # fmt: skip
    run = client.trigger("train_models", conf)
    deadline = time.monotonic() + 600
    while not list(checkpoints.glob("esmm-*/single/last.pt")):  # the first epoch is done: mid-run
        assert time.monotonic() < deadline, "training never wrote a checkpoint"
        assert client.run("train_models", run["dag_run_id"])["state"] in ("queued", "running")
        time.sleep(0.2)
    ti = next(t for t in client.task_instances("train_models", run["dag_run_id"]) if t["task_id"] == "train")
    assert ti["state"] == "running" and ti["pid"], ti
    os.kill(ti["pid"], signal.SIGKILL)

    runs = client.follow(CHAIN[2:], since, expect=CHAIN[2:], timeout=900)
    assert states(runs) == {"train_models": ["success"], "evaluate_models": ["success"], "promote_bento": ["success"]}
    ti = next(t for t in client.task_instances("train_models", run["dag_run_id"]) if t["task_id"] == "train")
    assert ti["state"] == "success" and ti["try_number"] == 2
    assert "resuming esmm from" in client.task_log(ti, 2)
    assert staging_record(settings, "esmm")["version"] == _alias(local_platform, "candidate")


def test_a_blocked_gate_stops_promotion_and_says_why(local_platform: Platform, chain: dict[str, list[dict]]) -> None:
    client, settings = local_platform.client, local_platform.settings
    staging = staging_record(settings, "esmm")
    assert staging, failures(client, chain)  # the chain staged a champion
    since = now()
    # A model that barely moved from its random start: far worse than the champion.
    conf = {"models": ["esmm"], "epochs": 1, "lr": 1e-7, "date": local_platform.days[-1].isoformat(),
            "chain": {"evaluate_models": TEST_CHAIN["evaluate_models"]}}  # fmt: skip
    client.trigger("train_models", conf)
    runs = client.follow(CHAIN[2:], since, expect=CHAIN[2:4], timeout=900)
    assert states(runs) == {"train_models": ["success"], "evaluate_models": ["failed"], "promote_bento": []}
    evaluation = runs["evaluate_models"][0]
    tis = {t["task_id"]: t for t in client.task_instances("evaluate_models", evaluation["dag_run_id"])}
    assert tis["evaluate"]["state"] == "success" and tis["promotion_gate"]["state"] == "failed"
    assert tis["promotion_gate"]["try_number"] == 1  # a gate does not retry
    # What the UI shows for the failed task: the model, the version, the champion and the reasons.
    candidate = _alias(local_platform, "candidate")
    shown = client.task_log(tis["promotion_gate"])
    assert f"gate blocked esmm v{candidate} (champion v{staging['version']})" in shown, shown[-3000:]
    assert "ctr:auc" in shown and "report:" in shown
    assert staging_record(settings, "esmm") == staging and _alias(local_platform, "staging") == staging["version"]


def test_a_failed_smoke_test_leaves_staging_alone(
    local_platform: Platform, chain: dict[str, list[dict]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from pipelines.serving.promote import PromotionError, promote
    from pipelines.training.api import train_for_run

    settings, days = local_platform.settings, local_platform.days
    record = staging_record(settings, "esmm")
    assert record, failures(local_platform.client, chain)  # the chain staged a champion
    for key, value in local_platform.env.items():
        monkeypatch.setenv(key, value)
    newer = train_for_run("esmm", "sim", days[0], days[1], {}, {"epochs": 1}, reuse=False)["version"]
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.MlflowClient().set_model_version_tag("coldstart_esmm", newer, "gate", "passed")
    failing = [{"path": "/rank", "body": {"user_id": 1, "candidates": []}, "status": 200}]
    with pytest.raises(PromotionError, match="smoke test of coldstart_ranker:.* failed; staging unchanged"):
        promote(settings, "esmm", newer, smoke=failing)
    assert _alias(local_platform, "staging") == record["version"] != str(newer)
    assert staging_record(settings, "esmm") == record
