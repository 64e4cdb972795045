"""Both BentoML services at the ASGI level: golden answers on fixed models, cold paths, 4xx, the token check."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _client(monkeypatch, service_dir: str, module: str, tag: str, **env: str) -> TestClient:
    """The service's ASGI app, loaded the way `bentoml serve` loads it (model tag and token from the env)."""
    monkeypatch.setenv("COLDSTART_BENTO_MODEL", tag)
    monkeypatch.setenv("COLDSTART_API_TOKEN", TOKEN)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.syspath_prepend(service_dir)
    _forget_bentoml_metrics()
    sys.modules.pop("service", None)
    service = importlib.import_module("service")
    return TestClient(getattr(service, module).to_asgi())


# One ASGI app per service for the whole session: BentoML registers its Prometheus metrics per app.
def _forget_bentoml_metrics() -> None:
    """Two services in one test process: BentoML registers its request metrics in the global Prometheus registry
    per app (a served process only ever holds one), so the first app's collectors go before the second's."""
    import prometheus_client

    registry = prometheus_client.REGISTRY
    for collector, names in list(registry._collector_to_names.items()):
        if any(n.startswith("bentoml_") for n in names):
            registry.unregister(collector)


@pytest.fixture(scope="session")
def ranker(ranker_tag):
    from pipelines.serving.bento import BENTOS

    env = {"COLDSTART_RANKER_FEATURES": "none"}
    with (
        pytest.MonkeyPatch.context() as patch,
        _client(patch, str(BENTOS / "ranker"), "Ranker", ranker_tag, **env) as c,
    ):
        yield c


@pytest.fixture(scope="session")
def melu(melu_tag):
    from pipelines.serving.bento import BENTOS

    with pytest.MonkeyPatch.context() as patch, _client(patch, str(BENTOS / "melu"), "MeLUService", melu_tag) as c:
        yield c


def _request_features(n: int = 30) -> tuple[dict, dict[int, dict]]:
    from ..model.test_training import synthetic_frame

    frame = synthetic_frame(200, seed=9).drop_duplicates("item_id").head(n)
    user_columns = ["gender", "age", "occupation", "region", "device", "view_count", "is_new_user",
                    "days_since_signup", "impressions_7d", "clicks_7d"]  # fmt: skip
    user = {c: frame[c].iloc[0].item() if hasattr(frame[c].iloc[0], "item") else frame[c].iloc[0]
            for c in user_columns}  # fmt: skip
    item_columns = ["author_id", "category", "exposures_total", "ctr_smoothed_7d", "item_clicks_7d"]
    items = {int(r.item_id): {c: (getattr(r, c).item() if hasattr(getattr(r, c), "item") else getattr(r, c))
                              for c in item_columns} | {"content_vector": [float(x) for x in r.content_vector]}
             for r in frame.itertuples()}  # fmt: skip
    return user, items


def test_ranker_golden_ranking_equals_the_registered_model(ranker, bento_settings) -> None:
    import mlflow

    from pipelines.serving.policies import PolicyConfig, fuse

    user, items = _request_features()
    body = {"user_id": 7, "candidates": list(items), "user_features": user, "item_features": items}
    response = ranker.post("/rank", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["new_user"] is False and len(answer["items"]) == len(items)
    # The same rows through the registered MLflow model, fused the service's way, give the same order.
    mlflow.set_tracking_uri(bento_settings.mlflow_tracking_uri)
    model = mlflow.pyfunc.load_model("models:/coldstart_esmm@candidate").unwrap_python_model()
    frame = pd.DataFrame([{"item_id": i, "user_id": 7, **user, **f} for i, f in items.items()])
    out = model.predict(None, frame)
    expected = fuse(out["p_ctr"].to_numpy(), out["p_cvr"].to_numpy(), out["p_ctcvr"].to_numpy(), PolicyConfig())
    order = [int(i) for i in np.asarray(list(items))[np.argsort(-expected, kind="stable")]]
    assert [r["item_id"] for r in answer["items"]] == order
    np.testing.assert_allclose([r["score"] for r in answer["items"]], np.sort(expected)[::-1], rtol=1e-5)
    assert all(r["policies"] == [] for r in answer["items"])  # known items, no age: no policy touched them


def test_ranker_cold_user_and_cold_item_take_the_cold_paths(ranker) -> None:
    user, items = _request_features(5)
    unknown_item = 10**12
    response = ranker.post("/rank", json={"user_id": 10**12, "candidates": [*items, unknown_item], "k": 3},
                           headers=AUTH)  # fmt: skip
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["new_user"] is True and len(answer["items"]) == 3
    full = ranker.post("/rank", json={"user_id": 10**12, "candidates": [unknown_item]}, headers=AUTH).json()
    assert full["items"][0]["policies"] == ["default_item_embedding"]
    assert 0 < full["items"][0]["p_ctr"] < 1


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": 1, "candidates": []},
        {"user_id": "abc", "candidates": [1]},
        {"candidates": [1, 2]},
        {"user_id": 1, "candidates": ["x"]},
        {"user_id": 1, "candidates": list(range(1001))},
        {"user_id": 1, "candidates": [1], "k": 0},
    ],
)
def test_ranker_rejects_bad_input_with_a_4xx(ranker, body) -> None:
    response = ranker.post("/rank", json=body, headers=AUTH)
    assert 400 <= response.status_code < 500, response.text


def test_ranker_token_and_health(ranker) -> None:
    body = {"user_id": 1, "candidates": [1]}
    assert ranker.post("/rank", json=body).status_code == 401
    assert ranker.post("/rank", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert ranker.get("/readyz").status_code == 200 and ranker.get("/livez").status_code == 200
    # This bento was built without a champion two-tower: /recommend says so instead of answering half.
    assert ranker.post("/recommend", json={"user_id": 1}, headers=AUTH).status_code == 503
    # `channels`, when given, names at least one channel: checked with the request, before any retrieval.
    assert ranker.post("/recommend", json={"user_id": 1, "channels": []}, headers=AUTH).status_code == 400


def test_melu_adapts_on_the_support_set(melu, bento_settings) -> None:
    from pipelines.data.movielens import load_rows

    rows = load_rows(bento_settings.data_dir)
    user = rows[(rows["scenario"] == "new_user")]
    user = user[user["user_id"] == user["user_id"].iloc[0]]
    support = user[user["role"] == "support"]
    query = [int(i) for i in user[user["role"] == "query"]["item_id"]]
    pairs = zip(support["item_id"], support["rating"], strict=True)
    profile = {"gender": str(user["gender"].iloc[0]), "age": int(user["age"].iloc[0])}
    body = {
        "support": [{"item_id": int(i), "rating": float(r)} for i, r in pairs],
        "candidates": query,
        "profile": profile,
    }
    adapted = melu.post("/adapt", json=body, headers=AUTH)
    assert adapted.status_code == 200, adapted.text
    predictions = adapted.json()["predictions"]
    assert sorted(p["item_id"] for p in predictions) == sorted(query)
    assert all(np.isfinite(p["rating"]) for p in predictions)
    assert [p["rating"] for p in predictions] == sorted((p["rating"] for p in predictions), reverse=True)
    # Without the support set the global weights answer: adaptation changed the predictions.
    plain = melu.post("/adapt", json={**body, "support": []}, headers=AUTH).json()["predictions"]
    assert {p["item_id"]: p["rating"] for p in plain} != {p["item_id"]: p["rating"] for p in predictions}


def test_melu_unknown_items_evidence_bad_input_and_token(melu) -> None:
    answer = melu.post("/adapt", json={"candidates": [1, 2, 10**12]}, headers=AUTH).json()
    assert answer["unknown_items"] == [10**12] and len(answer["predictions"]) == 2
    evidence = melu.post("/evidence", json={"k": 5}, headers=AUTH).json()["items"]
    assert 0 < len(evidence) <= 5 and all(0 <= e["score"] <= 1 for e in evidence)
    first = evidence[0]["item_id"]
    again = melu.post("/evidence", json={"k": 5, "exclude": [first]}, headers=AUTH).json()["items"]
    assert first not in [e["item_id"] for e in again]
    assert melu.post("/adapt", json={"support": [{"item_id": 1, "rating": 7}], "candidates": [1]},
                     headers=AUTH).status_code == 400  # fmt: skip
    assert melu.post("/evidence", json={"k": 0}, headers=AUTH).status_code == 400
    assert melu.post("/evidence", json={"k": 3}).status_code == 401
