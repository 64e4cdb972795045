"""The model catalog: a family registered by a test alone runs through train -> evaluate -> gate.

The family below (item popularity: smoothed CTR and CVR per item from the training window) exists only in this
file. Nothing else in the platform names it: it is trained through ``pipelines.training.api.train``, scored by
the rankers' evaluation hook (it answers the same pCTR / pCVR / pCTCVR frame), gated with its family's gate
defaults, and its version gets the ``approved`` alias like any other model's.
"""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest

from pipelines import catalog
from pipelines.catalog import TRAINING_EXPERIMENT, CatalogError, Family
from pipelines.data.contract import Store
from pipelines.evaluation.api import EvaluationConfig, evaluate_model
from pipelines.settings import use_mlflow_experiment
from pipelines.training.api import train
from pipelines.training.config import TrainRequest

NAME = "popular_items"
PRIOR_WEIGHT = 20.0  # impressions of the global rate each item's rate starts from


class Popularity(mlflow.pyfunc.PythonModel):
    """Item-level smoothed click and conversion rates; unseen items get the global rates."""

    def __init__(self, ctr: dict[int, float], cvr: dict[int, float], prior_ctr: float, prior_cvr: float):
        self.ctr, self.cvr, self.prior_ctr, self.prior_cvr = ctr, cvr, prior_ctr, prior_cvr

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        items = model_input["item_id"]
        p_ctr = items.map(self.ctr).fillna(self.prior_ctr).to_numpy(float)
        p_cvr = items.map(self.cvr).fillna(self.prior_cvr).to_numpy(float)
        return pd.DataFrame({"p_ctr": p_ctr, "p_cvr": p_cvr, "p_ctcvr": p_ctr * p_cvr})


def train_popularity(settings, model: catalog.Model, request: TrainRequest) -> dict:
    """The family's train hook: rates from the request's window, one MLflow run, a version aliased candidate."""
    data = Store(settings.data_dir, request.dataset)
    rows = data.read_range("impressions", request.start, request.end, layer="clean",
                           columns=["item_id", "click", "conversion"]).to_pandas()  # fmt: skip
    prior_ctr = float(rows["click"].mean())
    clicked = rows[rows["click"] > 0]
    prior_cvr = float(clicked["conversion"].mean())
    per_item = rows.groupby("item_id")["click"].agg(["sum", "size"])
    ctr = (per_item["sum"] + PRIOR_WEIGHT * prior_ctr) / (per_item["size"] + PRIOR_WEIGHT)
    per_click = clicked.groupby("item_id")["conversion"].agg(["sum", "size"])
    cvr = (per_click["sum"] + PRIOR_WEIGHT * prior_cvr) / (per_click["size"] + PRIOR_WEIGHT)
    wrapper = Popularity(ctr.to_dict(), cvr.to_dict(), prior_ctr, prior_cvr)
    use_mlflow_experiment(settings, TRAINING_EXPERIMENT)
    with mlflow.start_run(run_name=NAME):
        mlflow.set_tags({"lineage.start": str(request.start), "lineage.end": str(request.end)})
        info = mlflow.pyfunc.log_model(name="model", python_model=wrapper, registered_model_name=model.registered_name,
                                       input_example=pd.DataFrame({"item_id": [1, 2]}))  # fmt: skip
    version = str(info.registered_model_version)
    mlflow.MlflowClient().set_registered_model_alias(model.registered_name, "candidate", version)
    return {"model": model.name, "version": version, "items": len(per_item)}


@pytest.fixture
def popularity_family():
    family = Family(
        name="popularity",
        models={NAME: {"feature_service": "esmm_v1"}},
        bento_service="ranker",
        gate={"floors": {"ctr:auc": 0.5, "ctcvr:auc": 0.5}},
        hooks={"train": train_popularity, "evaluate": "pipelines.evaluation.rankers:score_ranker"},
    )
    catalog.register(family)
    yield family
    catalog.unregister(family.name)


def test_a_family_registered_in_a_test_runs_through_train_evaluate_and_gate(
    platform, feast_store, popularity_family, monkeypatch
) -> None:
    monkeypatch.setenv("COLDSTART_HOME", str(platform.settings.home))
    assert NAME in catalog.models() and catalog.model(NAME).registered_name == "coldstart_popular_items"
    days = platform.days
    trained = train(NAME, TrainRequest(start=days[0], end=days[2]))
    assert trained["items"] > 100

    # Scored by the rankers' hook on the held-out day after the window; gated on the family's floors.
    # 1,500 users: the new-user slices are too small to judge here (the gate's strictness has its own tests).
    quick = EvaluationConfig(n_bootstrap=0, gate={"allow_skipped_cold_checks": True})
    result = evaluate_model(platform.settings, NAME, config=quick)
    assert result["window"]["start"] == str(days[3]) and result["rows"] > 1000
    assert result["gate"]["passed"], result["gate"]["reasons"]
    floors = {c["check"]: c["floor"] for c in result["gate"]["checks"] if "floor" in c}
    assert floors == {"ctr:auc": 0.5, "ctcvr:auc": 0.5}  # the family's defaults, not the rankers'
    assert result["slices"]["overall"]["tasks"]["ctr"]["candidate"]["auc"]["value"] > 0.5
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("coldstart_popular_items", "approved").version) == trained["version"]

    # A trigger's overrides go on top of the family's defaults: an unreachable floor blocks it.
    strict = EvaluationConfig(n_bootstrap=0, gate={"floors": {"ctr:auc": 0.99}, "allow_skipped_cold_checks": True})
    blocked = evaluate_model(platform.settings, NAME, config=strict)
    assert not blocked["gate"]["passed"]
    assert any(
        "ctr:auc on overall" in reason and "misses the floor 0.99" in reason for reason in blocked["gate"]["reasons"]
    )
    assert client.get_model_version(blocked["registered_model"], trained["version"]).tags["gate"] == "blocked"


def test_the_catalog_names_each_model_once_and_refuses_unknown_ones() -> None:
    names = catalog.models()
    assert len(names) == len(set(names))
    assert {"esmm", "ple", "melu"} <= set(names)
    with pytest.raises(CatalogError, match="unknown model 'nope'; choose from esmm"):
        catalog.model("nope")
    with pytest.raises(CatalogError, match="belong to another family"):
        catalog.register(Family(name="copy", models={"esmm": {}}, bento_service="ranker"))
    with pytest.raises(CatalogError, match="has no 'smoke_requests' hook"):
        Family("x", {}, "ranker").hook("smoke_requests")
