"""What the ranker bento needs beyond the model, and the golden requests its promotion smoke-tests: the ranker
family's ``side_data`` and ``smoke_requests`` hooks."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.catalog import Model
from pipelines.serving.smoke import UNKNOWN_ID
from pipelines.settings import Settings

log = logging.getLogger(__name__)


def known_items(home: Path, dataset: str = "sim", until: dt.date | None = None) -> pd.DataFrame | None:
    """Items' content vectors and exposures, what the ranker's ``content_knn`` policy picks neighbours from.

    The bento packs it as of its build (``until`` None: every day's features); evaluation reads it as of the
    scored model's training end, so no item stats of the held-out days leak into how new items are scored.

    Args:
        home: the platform home (its ``features/<dataset>`` tables).
        dataset: the dataset whose feature tables to read.
        until: the last feature day to read (content rows published up to it, the item-stats snapshot of the
            latest day up to it); None: all.

    Returns:
        ``item_id``, ``category``, ``keywords``, ``content_vector`` (float32 lists) and ``exposures_total`` (0
        for an item without stats), one row per item (its latest content row); None when there are no content or
        stats tables yet.
    """
    from pipelines.features.compute import FeatureLayout

    layout = FeatureLayout.for_dataset(home, dataset)
    content_days = [d for d in layout.days("item_content") if until is None or d <= until]
    stats_days = [d for d in layout.days("item_stats") if until is None or d <= until]
    if not content_days or not stats_days:
        return None
    columns = ["item_id", "category", "keywords", "content_vector"]  # what the content tower reads
    content = pd.concat([pd.read_parquet(layout.path("item_content", d), columns=columns)
                         for d in content_days]).drop_duplicates("item_id", keep="last")  # fmt: skip
    stats = pd.read_parquet(layout.path("item_stats", stats_days[-1]), columns=["item_id", "exposures_total"])
    items = content.merge(stats, on="item_id", how="left").fillna({"exposures_total": 0})
    items["content_vector"] = items["content_vector"].map(lambda v: np.asarray(v, dtype=np.float32).tolist())
    return items.reset_index(drop=True)


TOWER_DIR = "content_tower"  # the champion content tower's pyfunc, inside the bento model's folder


def side_data(settings: Settings, model: Model, target: Path) -> None:
    """Latest content and exposures of known items (:func:`known_items`), for content-similar new-item
    embeddings; the champion content tower (when there is one) that puts them and new items in its space; and
    ``/recommend``'s retrieval (the champion two-tower and the recall indexes,
    :func:`~pipelines.serving.recommend.pack_retrieval`) when a two-tower version is champion."""
    from pipelines.serving.recommend import pack_retrieval

    items = known_items(settings.home, "sim")
    if items is not None:
        items.to_parquet(target / "items.parquet")
    tower = champion_tower_uri(settings)
    if tower is not None:
        import mlflow

        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=tower, dst_path=str(target / TOWER_DIR)))
        (folder / "registered_version.json").write_text(json.dumps({"version": tower.rsplit("/", 1)[-1]}))
    if items is not None:
        pack_retrieval(settings, target, tower=packed_tower(target))


def champion_tower_uri(settings: Settings) -> str | None:
    """``models:/coldstart_content_tower/<v>`` of the champion tower, or None."""
    from pipelines.catalog.registry import alias_uri
    from pipelines.serving.content_vectors import TOWER_MODEL

    return alias_uri(settings, TOWER_MODEL)


def packed_tower(root: Path):
    """The content tower packed by :func:`side_data` under ``root`` (a :class:`TowerEmbedder`), or None."""
    folder = root / TOWER_DIR
    if not (folder / "MLmodel").is_file():
        return None
    import mlflow

    from pipelines.serving.content_vectors import TowerEmbedder

    wrapper = mlflow.pyfunc.load_model(str(folder)).unwrap_python_model()
    return TowerEmbedder.from_pyfunc(wrapper, json.loads((folder / "registered_version.json").read_text())["version"])


def smoke_requests(settings: Settings, model: Model) -> list[dict]:
    """A known user, a new user, an unknown item (on the default embedding), bad input; and ``/recommend`` for a
    user with history, a new user and an item published after the index build (:func:`_recommend_requests`)."""
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
        *_recommend_requests(settings, model, user, data.partitions("impressions", layer="clean")[-1]),
        {"path": "/rank", "body": {"user_id": user, "candidates": []}, "status": 400},
        {"path": "/rank", "body": {"user_id": "not-a-number", "candidates": items[:3]}, "status": 400},
    ]  # fmt: skip


def _recommend_requests(settings: Settings, model: Model, user: int, day: dt.date) -> list[dict]:
    """``/recommend`` when the bento packs retrieval (a champion two-tower): first a new user asked for an item
    published after the index build (:func:`_after_build_request`); then a user with history and a new one, each
    item naming the channels that recalled it, asked as of the end of the data's last ``day`` (recall pools are
    windows of item age: a simulated catalog is old by the wall clock); then bad input and an unknown channel."""
    from pipelines.catalog.registry import alias_uri

    if alias_uri(settings, "two_tower") is None:
        return []
    end = dt.datetime.combine(day, dt.time(23, 59), dt.UTC)
    now = end.isoformat()
    return [
        *_after_build_request(settings, model, day, end),
        {"path": "/recommend", "body": {"user_id": user, "k": 10, "now": now}, "status": 200,
         "check": lambda r: 0 < len(r["items"]) <= 10 and all(i["channels"] for i in r["items"])},
        {"path": "/recommend", "body": {"user_id": UNKNOWN_ID, "k": 5, "now": now}, "status": 200,
         "check": lambda r: r["new_user"] and 0 < len(r["items"]) <= 5 and bool(r["retrieval_version"])},
        {"path": "/recommend", "body": {"user_id": user, "k": 0, "now": now}, "status": 400},
        {"path": "/recommend", "body": {"user_id": user, "now": now, "channels": ["no_such_channel"]}, "status": 400},
    ]  # fmt: skip


def packed_retrieval(settings: Settings, model: Model) -> tuple[Path, dict] | None:
    """The retrieval folder and its manifest in ``model``'s newest import into this profile's BentoML store (the
    bento a promotion has just built and is smoke-testing), or None when it packs no retrieval."""
    from pipelines.retrieval.build import read_manifest
    from pipelines.serving.recommend import RETRIEVAL_DIR

    store = settings.home / "bentoml" / "models" / model.registered_name  # the layout BentoML's model store uses
    latest = store / "latest"
    if not latest.is_file():
        return None
    folder = store / latest.read_text().strip() / RETRIEVAL_DIR
    manifest = read_manifest(folder)
    return None if manifest is None else (folder, manifest)


def _after_build_request(settings: Settings, model: Model, day: dt.date, end: dt.datetime) -> list[dict]:
    """``/recommend`` for a new user half an hour after an item published after the packed indexes were built,
    from the smallest age pool that covers half an hour (``1h``): the item must be there, put in near-line.

    The item is the newest one of the ``items`` table published after the packed indexes' as-of time and at
    least 30 minutes before ``end``. The request must be the service's first ``/recommend``: the service refreshes
    its indexes from the near-line state on a request, as of that request's ``now`` (then at most once a minute),
    which makes this the time the items published since the build enter the pools, as in a deployment that
    refreshes continuously. Empty (logged) when the bento packs indexes built at packing (over every item) or no
    item is late enough.
    """
    from pipelines.data.contract import Store
    from pipelines.retrieval.recall import RecallConfig

    packed = packed_retrieval(settings, model)
    if packed is None or packed[1]["until"] is None:
        log.info("smoke: the bento packs no indexes built before its newest items; no item published after them")
        return []
    folder, manifest = packed
    as_of = pd.Timestamp(manifest["as_of"])
    data = Store(settings.data_dir, "sim")
    days = [d for d in data.partitions("items", "clean") if as_of.date() <= d <= day]
    items = pd.concat([data.read("items", d, "clean", columns=["item_id", "publish_time"]).to_pandas() for d in days],
                      ignore_index=True) if days else pd.DataFrame(columns=["item_id", "publish_time"])  # fmt: skip
    published = pd.to_datetime(items["publish_time"], utc=True)
    wait = pd.Timedelta(minutes=30)
    late = published[(published > as_of) & (published + wait <= pd.Timestamp(end))]
    pools = RecallConfig.model_validate_json((folder / "recall" / "recall_config.json").read_text()).pools
    covering = sorted((h, name) for name, h in pools.windows_hours.items() if pd.Timedelta(hours=h) >= wait)
    if late.empty or not covering:
        log.info("smoke: no item published after the indexes' as-of time %s and before %s", as_of, end - wait)
        return []
    item, at, pool = int(items.loc[late.idxmax(), "item_id"]), late.max(), covering[0][1]
    body = {"user_id": UNKNOWN_ID, "k": 500, "candidates": 500, "now": (at + wait).isoformat(), "channels": [pool]}
    log.info("smoke: item %d, published %s after the indexes (as of %s), asked from the %s pool", item, at, as_of,
             pool)  # fmt: skip
    return [{"path": "/recommend", "body": body, "status": 200,
             "check": lambda r: any(i["item_id"] == item and pool in i["channels"] for i in r["items"])}]  # fmt: skip
