"""Held-out evaluation through the real Feast store and MLflow registry: report, gate, aliases and tags; new items
scored as the ranker bento serves them; cold slices that no check could judge block unless allowed.

On this small platform (1,500 users, one held-out day) the new-user slices have a few hundred rows, under the
gate's ``min_count``: they cannot be judged, so the tests that expect a pass set the allowance (``ALLOW``)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from pipelines.data.contract import Store
from pipelines.evaluation.api import EvaluationConfig, EvaluationError, contest, evaluate_model, set_champion
from pipelines.evaluation.rankers import evaluation_frame, score_version, serving_policy
from pipelines.serving.ranker import RankerCore
from pipelines.serving.ranker_bento import known_items
from pipelines.training.api import train_for_run
from pipelines.training.registry import build_ranker, log_and_register

QUICK = {"n_bootstrap": 30}
ALLOW = {**QUICK, "gate": {"allow_skipped_cold_checks": True}}
NEW_USER_SLICES = ["user=new", "user=new&item=new", "user=new&item=warm"]
NAME = "coldstart_esmm"


@pytest.fixture(scope="module")
def trained(platform, feast_store, monkeypatch_module) -> str:
    """ESMM trained on the first three days (the fourth is held out); returns its version."""
    monkeypatch_module.setenv("COLDSTART_HOME", str(platform.settings.home))
    result = train_for_run("esmm", "sim", platform.days[0], platform.days[2], {},
                           {"epochs": 3, "batch_size": 512, "lr": 3e-3})  # fmt: skip
    return result["version"]


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture
def registry(platform, trained) -> mlflow.MlflowClient:
    """The registry as training left it: ``candidate`` on the trained version, no other alias, no gate outcome.

    The MLflow store is the session's, so without this a test would start from whatever aliases and gate tags
    the tests before it left (an ``approved`` version, a champion, a newer candidate).
    """
    mlflow.set_tracking_uri(platform.settings.mlflow_tracking_uri)
    client = mlflow.MlflowClient()
    for alias in list(client.get_registered_model(NAME).aliases):
        client.delete_registered_model_alias(NAME, alias)
    client.set_registered_model_alias(NAME, "candidate", trained)
    for key in client.get_model_version(NAME, trained).tags:
        if key.startswith("gate"):
            client.delete_model_version_tag(NAME, trained, key)
    return client


def register_copy(version: str, degrade: bool) -> str:
    """A new version of coldstart_esmm with the weights of ``version`` (re-initialized if ``degrade``)."""
    client = mlflow.MlflowClient()
    loaded = mlflow.pyfunc.load_model(f"models:/coldstart_esmm/{version}")
    source = loaded.unwrap_python_model()
    net = source.model
    if degrade:
        torch.manual_seed(123)
        net = build_ranker("esmm", source.encoder, net.cfg.model_dump())
    tags = client.get_run(client.get_model_version(NAME, version).run_id).data.tags
    mlflow.set_experiment("coldstart_training")
    with mlflow.start_run(run_name="copy"):
        mlflow.set_tags({k: v for k, v in tags.items() if k.startswith("lineage.")})
        return log_and_register(net, "esmm", net.cfg.model_dump(), source.encoder, loaded.input_example,
                                NAME)  # fmt: skip


def test_first_evaluation_uses_floors_writes_the_report_and_approves(platform, trained, registry) -> None:
    settings = platform.settings
    # The new-user slices are too small to judge: without the allowance the gate blocks and says so.
    strict = evaluate_model(settings, "esmm", config=EvaluationConfig(**QUICK))
    assert not strict["gate"]["passed"] and len(strict["gate"]["reasons"]) == 1
    reason = strict["gate"]["reasons"][0]
    assert reason.startswith(f"no cold-slice check could run on {', '.join(NEW_USER_SLICES)}: ")
    assert "too small to judge" in reason and "allow_skipped_cold_checks" in reason
    assert registry.get_model_version(NAME, trained).tags["gate"] == "blocked"

    result = evaluate_model(settings, "esmm", config=EvaluationConfig(**ALLOW))
    assert result["window"] == {"start": "2026-01-04", "end": "2026-01-04", "train_end": "2026-01-03"}
    assert result["champion"] is None and result["has_truth"]
    assert result["gate"]["passed"], result["gate"]["reasons"]
    assert all("floor" in c for c in result["gate"]["checks"] if c["outcome"] != "skipped")  # cold slices too
    overall = result["slices"]["overall"]["tasks"]
    assert overall["ctr"]["count"] == result["rows"] and overall["cvr"]["count"] == overall["ctr"]["positives"]
    assert 0 < overall["ctr"]["oracle"]["oracle_auc"] <= 1 and "entire_space_auc_candidate" in overall["cvr"]["oracle"]
    # The report holds every slice, in the JSON and in the HTML, and both are in the MLflow run.
    html = Path(result["report"]["html"]).read_text()
    saved = json.loads(Path(result["report"]["json"]).read_text())
    # sparse_user: SliceConfig's default custom slice (the DAG's default too)
    expected = ["overall", "user=new", "user=warm", "item=new", "item=warm", "user=new&item=new", "user=new&item=warm",
                "user=warm&item=new", "user=warm&item=warm", "exposure=low", "exposure=high",
                "sparse_user"]  # fmt: skip
    assert list(saved["slices"]) == expected
    for name in expected:
        assert f"<td>{name.replace('&', '&amp;')}</td>" in html
    # Each cold slice lists the checks that ran and those skipped (why), and how its rows were scored.
    assert saved["cold_slices"] == [*NEW_USER_SLICES[:1], "item=new", *NEW_USER_SLICES[1:], "user=warm&item=new",
                                    "exposure=low"]  # fmt: skip
    for name in saved["cold_slices"]:
        checks = saved["slices"][name]["checks"]
        assert checks["judged"] == (name not in NEW_USER_SLICES), (name, checks)
        assert sorted(checks["ran"] + [s["check"] for s in checks["skipped"]]) == ["ctcvr:auc", "ctr:auc"]
        assert all(s["reason"].startswith("too small to judge") for s in checks["skipped"])
    assert saved["slices"]["item=new"]["checks"]["ran"] == ["ctr:auc", "ctcvr:auc"]
    paths = saved["slices"]["item=new"]["scoring"]["candidate"]
    assert paths["item_oov_rows"] > 0 and paths["content_knn_rows"] == paths["item_oov_rows"]  # served: content kNN
    assert saved["slices"]["user=new"]["scoring"]["candidate"]["new_user_rows"] == saved["slices"]["user=new"]["count"]
    assert saved["scoring"]["policy"]["new_item_embedding"] == "content_knn"
    assert saved["scoring"]["versions"]["candidate"]["known_items_as_of"] == "2026-01-03"
    assert "<h2>Cold slices</h2>" in html and "<td>user=new</td><td>" in html and "content-kNN" in html
    assert html.count("data:image/png;base64,") >= 2 and "http" not in html.replace("http-equiv", "")
    client = registry
    artifacts = {a.path for a in client.list_artifacts(result["run_id"])}
    assert {"evaluation.json", "report.html", "gate.json"} <= artifacts
    assert client.get_run(result["run_id"]).data.tags["gate.passed"] == "true"
    version = client.get_model_version(NAME, trained)
    assert version.tags["gate"] == "passed"
    assert str(client.get_model_version_by_alias(NAME, "approved").version) == trained


def test_gate_blocks_a_degraded_candidate_and_passes_an_equal_one(platform, trained, registry) -> None:
    settings, client = platform.settings, registry
    client.set_registered_model_alias(NAME, "approved", trained)  # the gate passed it, as a first evaluation does
    assert set_champion(settings, "esmm", trained)["champion"] == trained
    degraded = register_copy(trained, degrade=True)
    blocked = evaluate_model(settings, "esmm", config=EvaluationConfig(**ALLOW))
    assert blocked["candidate"]["version"] == degraded and blocked["champion"]["version"] == trained
    assert not blocked["gate"]["passed"]
    assert any(r.startswith("ctr:auc on overall") for r in blocked["gate"]["reasons"])
    assert client.get_model_version(NAME, degraded).tags["gate"] == "blocked"
    assert str(client.get_model_version_by_alias(NAME, "approved").version) == trained  # unchanged
    assert client.get_run(blocked["run_id"]).data.tags["gate.passed"] == "false"

    equal = register_copy(trained, degrade=False)
    passed = evaluate_model(settings, "esmm", config=EvaluationConfig(**ALLOW))
    assert passed["candidate"]["version"] == equal and passed["gate"]["passed"], passed["gate"]["reasons"]
    delta = passed["slices"]["overall"]["tasks"]["ctr"]["delta"]["auc"]
    assert delta["value"] == pytest.approx(0, abs=1e-9)
    assert str(client.get_model_version_by_alias(NAME, "approved").version) == equal


def test_windows_must_be_held_out_and_present(platform, registry) -> None:
    settings = platform.settings
    with pytest.raises(EvaluationError, match="overlaps the training window"):
        evaluate_model(settings, "esmm", start=platform.days[2], end=platform.days[3], config=EvaluationConfig(**QUICK))
    with pytest.raises(EvaluationError, match="no clean impressions for 2026-01-09"):
        evaluate_model(settings, "esmm", start=dt.date(2026, 1, 9), config=EvaluationConfig(**QUICK))
    with pytest.raises(EvaluationError, match="no version with alias 'candidate'"):
        evaluate_model(settings, "ple", config=EvaluationConfig(**QUICK))


def test_new_items_are_scored_as_the_ranker_bento_serves_them(platform, trained, registry) -> None:
    """A held-out row of a new item: content-kNN row under the served policy, equal to ``RankerCore.rank`` for that
    user and item; the default row, equal to the raw model, under ``new_item_embedding = "default"``."""
    settings, day = platform.settings, platform.days[3]
    game = contest(settings, "esmm", config=EvaluationConfig(**QUICK))
    frame, _ = evaluation_frame(game, Store(settings.data_dir, "sim"), day, day)
    policy = serving_policy(game)
    scores, info = score_version(game, game.candidate, frame, policy, day)
    assert info["path"] == "RankerCore.score_frame" and info["knn_neighbour_pool"] > 0
    knn = np.flatnonzero(scores["item_knn_row"].to_numpy())
    assert len(knn) and scores["item_oov"].to_numpy()[knn].all()
    wrapper = mlflow.pyfunc.load_model(f"models:/{NAME}/{trained}").unwrap_python_model()
    bento = RankerCore(wrapper, items=known_items(settings.home, "sim", platform.days[2]), config=policy)
    for index in knn[:: max(1, len(knn) // 5)][:5]:
        row = frame.iloc[index]
        features = {k: v for k, v in row.items() if k != "item_id"}  # the row's own user and item features
        answer = bento.rank(int(row["user_id"]), [int(row["item_id"])], user_features=features)
        served = answer["items"][0]
        assert served["policies"][0] == "new_item_embedding"
        for task in ("p_ctr", "p_cvr", "p_ctcvr"):
            assert served[task] == pytest.approx(scores[task].iloc[index], rel=1e-5)

    default_cfg = EvaluationConfig(**QUICK, policies={"new_item_embedding": "default"})
    default_game = contest(settings, "esmm", config=default_cfg)
    default, _ = score_version(default_game, game.candidate, frame, serving_policy(default_game), day)
    assert default["item_knn_row"].sum() == 0 and default["item_default_row"].sum() == scores["item_oov"].sum()
    raw = mlflow.pyfunc.load_model(f"models:/{NAME}/{trained}").unwrap_python_model().predict(None, frame.iloc[knn])
    np.testing.assert_allclose(default["p_ctr"].to_numpy()[knn], raw["p_ctr"], rtol=1e-5)
    assert not np.allclose(scores["p_ctr"].to_numpy()[knn], raw["p_ctr"])  # the kNN rows change what is scored
