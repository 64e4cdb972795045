"""What MeLU's bento needs beyond its weights, and the golden requests its promotion smoke-tests: the MeLU
family's ``side_data`` and ``smoke_requests`` hooks."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.catalog import Model
from pipelines.serving.smoke import UNKNOWN_ID
from pipelines.settings import Settings


def side_data(settings: Settings, model: Model, target: Path) -> None:
    """Item catalog (release year, genres, title) and the evidence candidates, so the service needs no data store.

    The title is there for a MeLU trained with the content tower: its encoder embeds each requested item from
    the catalog row's content (genres, title, year), the call evaluation and training make."""
    import mlflow

    from pipelines.data.movielens import ITEM_FIELDS, load_rows
    from pipelines.models.melu import evidence_candidates
    from pipelines.training.melu import MeluModel  # noqa: F401  (the pyfunc class must import)

    rows = load_rows(settings.data_dir)
    catalog = rows.drop_duplicates("item_id")[["item_id", *ITEM_FIELDS, "content_vector", "title"]]
    catalog.assign(content_vector=catalog["content_vector"].map(list)).to_parquet(target / "items.parquet")
    wrapper = mlflow.pyfunc.load_model(str(target / "mlflow")).unwrap_python_model()
    import torch

    warm = rows[(rows["scenario"] == "warm") & (rows["role"] == "support")]
    users = sorted(warm["user_id"].unique())[:100]  # a sample of warm users keeps the import fast
    supports = [
        (wrapper.encoder.transform(group), torch.tensor(group["item_id"].to_numpy()))
        for _, group in warm[warm["user_id"].isin(users)].groupby("user_id", sort=True)
    ]
    picks = evidence_candidates(wrapper.model, supports, k=50) if supports else []
    (target / "evidence.json").write_text(json.dumps([{"item_id": int(i), "score": s} for i, s in picks]))


def smoke_requests(settings: Settings, model: Model) -> list[dict]:
    """A new user's support set and candidates, unknown items, the evidence list, and bad input."""
    from pipelines.data.movielens import load_rows

    rows = load_rows(settings.data_dir)
    user = rows[rows["scenario"] == "new_user"]
    user = user[user["user_id"] == user["user_id"].iloc[0]]
    rated = user[user["role"] == "support"]
    support = [{"item_id": int(i), "rating": float(r)} for i, r in zip(rated["item_id"], rated["rating"], strict=True)]
    candidates = [int(i) for i in user[user["role"] == "query"]["item_id"]]
    n_candidates = len(candidates)
    return [
        {"path": "/adapt", "body": {"support": support, "candidates": candidates}, "status": 200,
         "check": lambda r: len(r["predictions"]) == n_candidates},
        {"path": "/adapt", "body": {"support": [], "candidates": [*candidates[:3], UNKNOWN_ID]}, "status": 200,
         "check": lambda r: r["unknown_items"] == [UNKNOWN_ID] and len(r["predictions"]) == 3},
        {"path": "/evidence", "body": {"k": 5}, "status": 200, "check": lambda r: len(r["items"]) <= 5},
        {"path": "/adapt", "body": {"support": [{"item_id": candidates[0], "rating": 9}], "candidates": [1]},
         "status": 400},
        {"path": "/adapt", "body": {"candidates": []}, "status": 400},
    ]  # fmt: skip
