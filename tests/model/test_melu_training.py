"""MeLU's meta-training on the real MovieLens-1M split (a few tasks), registered and served by alias."""

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipelines.data.movielens import ingest_movielens, load_rows
from pipelines.models.melu import MeLUConfig
from pipelines.settings import get_settings
from pipelines.training.melu import tasks_of, train_melu


def test_melu_trains_registers_and_adapts_to_a_new_user(tmp_path: Path) -> None:
    settings = get_settings(home=tmp_path / "home")
    ingest_movielens(settings.data_dir)
    cfg = MeLUConfig(embed_dim=8, hidden=[16, 16], local_lr=5e-3, meta_lr=1e-3, tasks_per_batch=16)
    result = train_melu(settings, cfg, epochs=1, max_tasks=64)
    assert set(result["scores"]) == {"warm", "new_user", "new_item", "both_new"}
    assert all(0 < s["mae"] < 4 for s in result["scores"].values())
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    model = mlflow.pyfunc.load_model("models:/coldstart_melu@candidate")
    rows = load_rows(settings.data_dir)
    user, request = _first_user_request(rows, "new_user")
    out = model.predict(request)
    assert len(out) == (user["role"] == "query").sum() and np.isfinite(out["rating"]).all()


@pytest.mark.slow
def test_melu_with_the_content_tower_registers_and_scores_a_new_item_user(tmp_path: Path) -> None:
    settings = get_settings(home=tmp_path / "home")
    ingest_movielens(settings.data_dir)
    cfg = MeLUConfig(embed_dim=8, hidden=[16, 16], local_lr=5e-3, meta_lr=1e-3, tasks_per_batch=16, content_tower=True)
    result = train_melu(settings, cfg, epochs=1, max_tasks=64)
    assert all(0 < s["mae"] < 4 for s in result["scores"].values())
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    run = mlflow.get_run(result["run_id"])
    assert run.data.metrics["tower_val_triplet_accuracy"] > 0.5
    wrapper = mlflow.pyfunc.load_model("models:/coldstart_melu@candidate")
    rows = load_rows(settings.data_dir)
    user, request = _first_user_request(rows, "new_item")
    out = wrapper.predict(request)
    # the pyfunc embeds the new items from their content, as evaluation does through the same encoder
    inner = wrapper.unwrap_python_model()
    tasks = tasks_of(user, inner.encoder)["new_item"]
    expected = inner.model.predict(*tasks[0]).numpy()
    assert np.allclose(np.sort(out["rating"].to_numpy()), np.sort(expected), atol=1e-5)


def _first_user_request(rows: pd.DataFrame, scenario: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The scenario's first user's rows, and the pyfunc request of them: support rows, query rows as candidates."""
    rows = rows[rows["scenario"] == scenario]
    user = rows[rows["user_id"] == rows["user_id"].iloc[0]]
    support, query = user[user["role"] == "support"], user[user["role"] == "query"]
    return user, pd.concat([support.assign(role="support"), query.assign(role="candidate")])
