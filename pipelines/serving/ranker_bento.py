"""What the ranker bento needs beyond the model, and the golden requests its promotion smoke-tests: the ranker
family's ``side_data`` and ``smoke_requests`` hooks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.catalog import Model
from pipelines.serving.smoke import UNKNOWN_ID
from pipelines.settings import Settings


def side_data(settings: Settings, model: Model, target: Path) -> None:
    """Latest content vectors and exposures of known items, for content-similar new-item embeddings."""
    from pipelines.features.compute import FeatureLayout

    layout = FeatureLayout.for_dataset(settings.home, "sim")
    content_days, stats_days = layout.days("item_content"), layout.days("item_stats")
    if not content_days or not stats_days:
        return
    content = pd.concat([pd.read_parquet(layout.path("item_content", d), columns=["item_id", "content_vector"])
                         for d in content_days]).drop_duplicates("item_id", keep="last")  # fmt: skip
    stats = pd.read_parquet(layout.path("item_stats", stats_days[-1]), columns=["item_id", "exposures_total"])
    items = content.merge(stats, on="item_id", how="left").fillna({"exposures_total": 0})
    items["content_vector"] = items["content_vector"].map(lambda v: np.asarray(v, dtype=np.float32).tolist())
    items.to_parquet(target / "items.parquet")


def smoke_requests(settings: Settings, model: Model) -> list[dict]:
    """A known user, a new user, an unknown item (on the default embedding), and bad input."""
    from pipelines.data.contract import Store

    data = Store(settings.data_dir, "sim")
    impressions = data.read(
        "impressions", data.partitions("impressions", layer="clean")[-1], layer="clean", columns=["user_id", "item_id"]
    ).to_pandas()
    user = int(impressions["user_id"].iloc[0])
    items = [int(i) for i in impressions["item_id"].drop_duplicates().head(50)]
    n_items = len(items)
    return [
        {"path": "/rank", "body": {"user_id": user, "candidates": items}, "status": 200,
         "check": lambda r: len(r["items"]) == n_items and not r["new_user"]},
        {"path": "/rank", "body": {"user_id": UNKNOWN_ID, "candidates": items[:10]}, "status": 200,
         "check": lambda r: r["new_user"] and len(r["items"]) == 10},
        {"path": "/rank", "body": {"user_id": user, "candidates": [UNKNOWN_ID, *items[:5]]}, "status": 200,
         "check": lambda r: any(i["item_id"] == UNKNOWN_ID and "default_item_embedding" in i["policies"]
                                for i in r["items"])},
        {"path": "/rank", "body": {"user_id": user, "candidates": []}, "status": 400},
        {"path": "/rank", "body": {"user_id": "not-a-number", "candidates": items[:3]}, "status": 400},
    ]  # fmt: skip
