"""The recall indexes of the champion two-tower, built once after training and packed by every bento after it.

:func:`build_indexes` (``train_models``' ``build_indexes`` task) indexes the catalog up to a day (the training
window's end) with the champion two-tower and the champion content tower, into a versioned folder::

    <home>/retrieval/<dataset>/v<two-tower version>/
        manifest.json        two-tower and content-tower versions, as-of time, item count, build time
        two_tower/           the two-tower's MLflow pyfunc
        version.txt          the two-tower version (what the service reports as ``retrieval_version``)
        recall/              every channel's index (:meth:`~pipelines.retrieval.recall.Recall.save`)
        indexed_items.npy    the ids the channels were built over
        histories.parquet    users' last clicks up to the same day

The folder is written beside its final place and renamed into it, so a reader sees the previous build or the new
one, never half of one. :func:`~pipelines.serving.recommend.pack_retrieval` copies it into a bento when its
manifest names the current champions; items published after its as-of time reach the served indexes near-line
(:meth:`~pipelines.serving.recommend.Recommender.refresh`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.settings import Settings

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def index_root(settings: Settings, dataset: str = "sim") -> Path:
    """``<home>/retrieval/<dataset>``: one ``v<version>`` folder per two-tower version indexed."""
    return settings.home / "retrieval" / dataset


def read_manifest(folder: Path) -> dict | None:
    """The manifest of an index folder, or None when it has none."""
    path = folder / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def prebuilt(settings: Settings, dataset: str, two_tower: str, content_tower: str | None) -> Path | None:
    """The built folder of two-tower version ``two_tower`` when its manifest names that version and content
    tower ``content_tower`` (None: raw content vectors); else None (a stale or missing build)."""
    folder = index_root(settings, dataset) / f"v{two_tower}"
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    if (manifest["two_tower_version"], manifest["content_tower_version"]) != (str(two_tower), content_tower):
        built = (manifest["two_tower_version"], manifest["content_tower_version"])
        log.info("indexes in %s were built for two-tower v%s / content tower %s, not v%s / %s", folder, *built,
                 two_tower, content_tower)  # fmt: skip
        return None
    return folder


def write_indexes(settings: Settings, folder: Path, uri: str, tower: Any = None, dataset: str = "sim",
                  until: dt.date | None = None) -> dict:  # fmt: skip
    """Write into ``folder`` the two-tower ``uri`` (``models:/coldstart_two_tower/<v>``), the recall indexes of
    the catalog up to ``until`` (None: every feature day), users' recent clicks and the manifest.

    Args:
        settings: the platform settings (its home and registry).
        folder: where to write (created).
        uri: the two-tower version to index with.
        tower: the content tower (a :class:`~pipelines.serving.content_vectors.TowerEmbedder`) whose vectors
            the cluster channel groups items by; None: the raw content vectors.
        dataset: whose feature tables and logs to read.
        until: the last day of the catalog and the histories.

    Returns:
        The manifest written to ``folder/manifest.json``.

    Raises:
        ValueError: the catalog is empty up to ``until``.
    """
    import mlflow

    from pipelines.retrieval.recall import Recall
    from pipelines.serving.recommend import catalog_items, content_vectors, load_packed_two_tower, recent_histories

    items = catalog_items(settings.home, dataset, until)
    if items.empty:
        raise ValueError(f"no item content features of {dataset!r} up to {until or 'now'}: nothing to index")
    folder.mkdir(parents=True, exist_ok=True)
    version = uri.rsplit("/", 1)[-1]
    mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder / "two_tower"))
    (folder / "version.txt").write_text(version)
    two = load_packed_two_tower(folder)
    as_of = items["publish_time"].max()
    recall = Recall.build(items, two.embed_items(items), content_vectors(items, tower), as_of)
    recall.save(folder / "recall")
    np.save(folder / "indexed_items.npy", items["item_id"].to_numpy(np.int64))
    recent_histories(settings, dataset, until=until).to_parquet(folder / "histories.parquet")
    manifest = {
        "dataset": dataset,
        "two_tower_version": version,
        "content_tower_version": None if tower is None else str(tower.version),
        "as_of": as_of.isoformat(),
        "until": None if until is None else until.isoformat(),
        "items": len(items),
        "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def build_indexes(settings: Settings, dataset: str = "sim", until: dt.date | None = None) -> dict | None:
    """Build the champion two-tower's recall indexes over the catalog up to ``until`` into
    ``<home>/retrieval/<dataset>/v<version>``, replacing an earlier build of that version.

    The content clusters are fitted on the champion content tower's vectors when there is one. The folder is
    built in a temporary sibling and renamed into place.

    Returns:
        The manifest, or None when no two-tower version is ``champion`` (nothing written).
    """
    from pipelines.catalog.registry import alias_uri
    from pipelines.serving.content_vectors import load_tower

    uri = alias_uri(settings, "two_tower")
    if uri is None:
        log.info("no two_tower@champion: no recall indexes to build")
        return None
    root = index_root(settings, dataset)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"v{uri.rsplit('/', 1)[-1]}"
    scratch = root / f".{final.name}.{uuid.uuid4().hex}"
    try:
        manifest = write_indexes(settings, scratch / "new", uri, load_tower(settings), dataset, until)
        if final.exists():
            final.rename(scratch / "old")  # same file system: a rename each, the old build removed after
        (scratch / "new").rename(final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("built the recall indexes of %s (%d items as of %s) in %s", uri, manifest["items"], manifest["as_of"],
             final)  # fmt: skip
    return manifest
