"""Retrieval evaluation: a held-out day replayed hour by hour over the recall channels, recall@k per channel and
cold-start slice, new-item coverage within 1 h and 24 h of publishing, and the two-tower's evaluation report.

The replay (:func:`replay_day`): a :class:`~pipelines.retrieval.recall.Recall` indexed at the day's start over the
items published before it; then, an hour at a time, the hour's new items are published into every channel, up
to ``per_hour`` of the users who clicked in the hour (a seeded sample) ask for ``k`` candidates at the hour's end
(their vector, history and seen items as of the day's start), the hour's clicks feed the look-alike vectors (the
index keeps those on the items it holds, the last 24 h's) and the channels expire what is past their windows.
Nothing reads the hidden truth: clicks are what the log shows.

Figures, per channel (``any``: the merged list; each channel in the recall's quotas: the items it found, as the
merged list's ``channels`` say) and per slice:

* recall@k: share of the hour's clicks of the requesting users that are in the merged list (found by the channel).
  A (user, item) pair counts once an hour; a click on an item the user clicked before the day is not judged
  (serving filters seen items, so no channel may return it); a click on an item outside the catalog is not judged.
  Slices: ``all``; ``new_user`` (no click before the day in the log the caller holds: for the two-tower, its
  training window) / ``warm_user``; ``new_item`` (published on the replayed day) / ``warm_item``.
* new-item coverage: share of the day's new items returned to anyone within 1 h / 24 h of publishing. Every new
  item's first hour is fully observed (requests come at each hour's end, so an item gets exactly one request
  round in its first hour, inside the day). Its 24 h window is not: it runs past the day's end for every item
  published after the day's first instant, so the ``24h`` figure is *right-censored*: items returned by the day's
  end (at most 24 h after publishing), a lower bound on true 24 h coverage. The report says so: ``new_items``
  carries ``censored_24h`` (items whose 24 h window runs past the replay) and ``mean_observed_hours``; a replay of
  more hours (``hours``) observes more of each window. Coverage counts only the replayed requests (``per_hour``
  caps them), so it is also a lower bound on what full traffic would show.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

HOUR = pd.Timedelta(hours=1)
SLICES = ("all", "new_user", "warm_user", "new_item", "warm_item")
WINDOWS = {"1h": HOUR, "24h": 24 * HOUR}


class RetrievalEvalConfig(BaseModel):
    """The retrieval replay's knobs (the two-tower's ``evaluation`` override). Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Replay the held-out day after training and write the report.")
    k: int = Field(200, ge=1, description="Merged list length (what recall hands the ranker).")
    per_hour: int = Field(200, ge=1, description="Most requests replayed an hour (users sampled among the hour's "
                          "clickers): caps the replay's wall time on a large day.")  # fmt: skip
    seed: int = Field(0, description="Seed of the sample of requesting users.")


@dataclass
class Requesters:
    """The users who may ask, as of the replay's start: ``user_ids`` [u], two-tower ``vectors`` [u, d],
    ``histories`` (clicked item ids, newest first) and ``seen`` (items clicked before; empty: a new user)."""

    user_ids: np.ndarray
    vectors: np.ndarray
    histories: list[np.ndarray]
    seen: list[np.ndarray]


def _utc(t: Any) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t if t.tzinfo else t.tz_localize("UTC")


def _judged_clicks(clicks: pd.DataFrame, users: Requesters, row: dict[int, int], new_ids: set[int],
                   catalog: set[int], start: pd.Timestamp, hours: int) -> pd.DataFrame:  # fmt: skip
    """The clicks recall@k judges: in the replay, by a known user, on a catalog item the user had not seen; one
    per (user, item, hour); with ``hour``, ``new_user``, ``new_item``."""
    times = pd.to_datetime(clicks["event_time"], utc=True)
    keep = (times >= start) & (times < start + hours * HOUR) & clicks["user_id"].isin(list(row))
    out = clicks.loc[keep, ["user_id", "item_id"]].astype(np.int64)
    out["hour"] = ((times[keep] - start) // HOUR).astype(int)
    out = out[out["item_id"].isin(list(catalog))]
    seen = {u: set(users.seen[row[u]].tolist()) for u in set(out["user_id"].tolist())}
    before = [i in seen[u] for u, i in zip(out["user_id"].tolist(), out["item_id"].tolist(), strict=True)]
    out = out[~np.asarray(before, bool)].drop_duplicates(["user_id", "item_id", "hour"])
    out["new_user"] = [len(users.seen[row[int(u)]]) == 0 for u in out["user_id"]]
    out["new_item"] = out["item_id"].isin(list(new_ids))
    return out.reset_index(drop=True)


def _slices(new_user: bool, new_item: bool) -> tuple[str, str, str]:
    return "all", "new_user" if new_user else "warm_user", "new_item" if new_item else "warm_item"


def _askers(clickers: np.ndarray, per_hour: int, rng: np.random.Generator) -> list[int]:
    """Up to ``per_hour`` of the hour's clickers, a seeded sample (sorted first, so the sample is reproducible)."""
    clickers = np.unique(clickers)
    if len(clickers) > per_hour:
        clickers = np.sort(rng.choice(clickers, per_hour, replace=False))
    return clickers.tolist()


class _Tally:
    """What the replay's requests found: hits per channel and slice, each new item's first return per channel."""

    def __init__(self, names: list[str], new_ids: set[int]) -> None:
        self.names, self.new_ids = names, new_ids
        self.hits = {name: {s: [0, 0] for s in SLICES} for name in names}
        self.first: dict[str, dict[int, pd.Timestamp]] = {name: {} for name in names}

    def request(self, found: dict[int, tuple[str, ...]], now: pd.Timestamp, judged: pd.DataFrame) -> None:
        """One merged list (item -> channels that found it) at ``now``; ``judged``: the user's judged clicks."""
        for item in self.new_ids.intersection(found):
            for name in ("any", *found[item]):
                if name in self.first:
                    self.first[name].setdefault(item, now)
        for item, new_user, new_item in judged[["item_id", "new_user", "new_item"]].itertuples(index=False):
            for name in self.names:
                hit = item in found if name == "any" else name in found.get(item, ())
                for s in _slices(new_user, new_item):
                    self.hits[name][s][0] += int(hit)
                    self.hits[name][s][1] += 1

    def summary(self, published: dict[int, pd.Timestamp], end: pd.Timestamp) -> dict:
        """recall@k per channel and slice, coverage per channel and window, the new items' censoring."""
        recall = {name: {s: {"recall": h / n if n else None, "hits": h, "clicks": n} for s, (h, n) in cells.items()}
                  for name, cells in self.hits.items()}  # fmt: skip
        n = len(published)
        coverage = {name: {window: _covered(seen, published, width, n) for window, width in WINDOWS.items()}
                    for name, seen in self.first.items()}  # fmt: skip
        observed = [min(24.0, (end - p) / HOUR) for p in published.values()]
        censored = sum(1 for p in published.values() if p + 24 * HOUR > end)
        new_items = {"published": n, "censored_24h": censored,
                     "mean_observed_hours": float(np.mean(observed)) if observed else None}  # fmt: skip
        return {"recall": recall, "coverage": coverage, "new_items": new_items}


def _covered(seen: dict[int, pd.Timestamp], published: dict[int, pd.Timestamp], width: pd.Timedelta, n: int) -> dict:
    covered = sum(1 for i, p in published.items() if i in seen and seen[i] - p <= width)
    return {"share": covered / n if n else None, "covered": covered, "items": n}


def replay_day(recall: Any, items: pd.DataFrame, item_vectors: np.ndarray, content_vectors: np.ndarray,
               users: Requesters, clicks: pd.DataFrame, start: Any, *, k: int = 200, per_hour: int = 200,
               seed: int = 0, hours: int = 24) -> dict:  # fmt: skip
    """Replay ``hours`` hours from ``start`` over ``recall`` (see the module docstring for the figures).

    Args:
        recall: a :class:`~pipelines.retrieval.recall.Recall` indexed as of ``start`` (it is updated in place).
        items: the catalog (``item_id``, ``publish_time``, ``category``, ``keywords``); the rows published in the
            replay are its new items, published into the channels hour by hour.
        item_vectors: [n, d] two-tower vectors of ``items``' rows; ``content_vectors``: [n, c] for the clusters.
        users: the possible requesters (every clicker of the replay should have a row; others' clicks are skipped).
        clicks: ``user_id``, ``item_id``, ``event_time`` (the replay's clicks; others are ignored).
        start: the replay's first instant (a held-out day's 00:00 UTC).
        k, per_hour, seed: list length, most requests an hour, seed of the requesters' sample.
        hours: how long the replay runs (24: one day).

    Returns:
        ``{"channels", "slices", "k", "per_hour", "seed", "start", "hours", "requests", "recall": {channel:
        {slice: {recall, hits, clicks}}}, "coverage": {channel: {"1h"|"24h": {share, covered, items}}},
        "new_items": {published, censored_24h, mean_observed_hours}}``.
    """
    start, items = _utc(start), items.reset_index(drop=True)
    end = start + hours * HOUR
    published = pd.to_datetime(items["publish_time"], utc=True)
    fresh = ((published >= start) & (published < end)).to_numpy()
    new_ids = set(items.loc[fresh, "item_id"].astype(int).tolist())
    row = {int(u): r for r, u in enumerate(np.asarray(users.user_ids).tolist())}
    judged = _judged_clicks(clicks, users, row, new_ids, set(items["item_id"].astype(int).tolist()), start, hours)
    clicked_at = pd.to_datetime(clicks["event_time"], utc=True)
    tally, rng, requests = _Tally(["any", *recall.cfg.quotas], new_ids), np.random.default_rng(seed), 0
    for hour in range(hours):
        now = start + (hour + 1) * HOUR
        batch = np.flatnonzero(fresh & ((published >= now - HOUR) & (published < now)).to_numpy())
        recall.publish(items.iloc[batch], item_vectors[batch], content_vectors[batch], now)
        in_hour = clicks[((clicked_at >= now - HOUR) & (clicked_at < now)).to_numpy()]
        in_hour = in_hour[in_hour["user_id"].isin(list(row))]
        mine = dict(list(judged[judged["hour"] == hour].groupby("user_id")))
        for user in _askers(in_hour["user_id"].to_numpy(np.int64), per_hour, rng):
            r = row[user]
            merged = recall.recall(users.vectors[r], list(users.histories[r]), now, k, users.seen[r])
            tally.request(dict(zip(merged.ids.tolist(), merged.channels, strict=True)), now, mine.get(user, judged[:0]))
            requests += 1
        if len(in_hour):  # the look-alike index keeps the engagements of the items it holds (new ones)
            rows = [row[int(u)] for u in in_hour["user_id"]]
            recall.engage(in_hour["item_id"].to_numpy(np.int64), users.vectors[rows])
        recall.expire(now)
    times = dict(zip(items.loc[fresh, "item_id"].astype(int).tolist(), published[fresh], strict=True))
    out = {"channels": tally.names, "slices": list(SLICES), "k": k, "per_hour": per_hour, "seed": seed,
           "start": start.isoformat(), "hours": hours, "requests": requests}  # fmt: skip
    return out | tally.summary(times, end)


def empty_evaluation(day: dt.date, reason: str) -> dict:
    """What a replay that cannot run reports: no figures, and why."""
    return {"day": day.isoformat(), "skipped": reason, "recall": {}, "coverage": {}}


def replay_window(window: Any, day: dt.date, item_vectors: np.ndarray, content_vectors: np.ndarray,
                  embed_users: Callable[[pd.DataFrame, list], np.ndarray], history_len: int,
                  cfg: RetrievalEvalConfig, recall_cfg: Any = None) -> dict:  # fmt: skip
    """Replay held-out ``day`` of a window: the recall indexed at its start over the items published before it,
    requesters as of its start (profile, last ``history_len`` clicks, seen items), the day's clicks.

    Args:
        window: a :class:`~pipelines.training.two_tower_data.WindowLog` holding ``day``.
        item_vectors, content_vectors: [n, d], [n, c] of ``window.items``' rows (two-tower; cluster space).
        embed_users: (user rows, histories) -> [u, d] two-tower user vectors.
        recall_cfg: the channels' :class:`~pipelines.retrieval.recall.RecallConfig` (None: the defaults).

    Returns:
        :func:`replay_day`'s figures with ``day`` and ``catalog`` (items indexed at the start), or
        :func:`empty_evaluation` when the day has no clicks or nothing was published before it.
    """
    from pipelines.retrieval.recall import Recall
    from pipelines.training.two_tower_data import clicks_of, recall_task

    start = pd.Timestamp(day, tz="UTC")
    times = window.impressions["event_time"]
    held = clicks_of(window.impressions[(times >= start) & (times < start + 24 * HOUR)])
    items = window.items.reset_index(drop=True)
    old = (pd.to_datetime(items["publish_time"], utc=True) < start).to_numpy()
    if held.empty:
        return empty_evaluation(day, f"no clicks on the held-out day {day}")
    if not old.any():
        return empty_evaluation(day, f"no item published before {day} to index")
    recall = Recall.build(items[old], item_vectors[old], content_vectors[old], start, recall_cfg)
    task = recall_task(window, day, history_len)
    users = Requesters(task.users["user_id"].to_numpy(np.int64), embed_users(task.users, task.histories),
                       task.histories, task.seen)  # fmt: skip
    result = replay_day(recall, items, item_vectors, content_vectors, users, held, start, k=cfg.k,
                        per_hour=cfg.per_hour, seed=cfg.seed)  # fmt: skip
    return {"day": day.isoformat(), "catalog": int(old.sum())} | result


def _cell(entry: dict, share: str, hits: str, total: str) -> str:
    value = entry[share]
    shown = "–" if value is None else f"{100 * value:.1f}%"
    return f"<td>{shown} ({entry[hits]}/{entry[total]})</td>"


def report_html(result: dict) -> str:
    """A small offline page: recall@k per channel x slice (hits/clicks), coverage per channel and window."""
    title = html.escape(f"Retrieval replay: {result.get('model', '')} v{result.get('version', '')}")
    parts = [f"<!doctype html><meta charset='utf-8'><title>{title}</title><h1>{title}</h1>"]
    if result.get("skipped"):
        return "".join([*parts, f"<p>Not evaluated: {html.escape(result['skipped'])}</p>"])
    parts.append(f"<p>Held-out day {result['day']}, k={result['k']}, {result['requests']} requests (at most "
                 f"{result['per_hour']} an hour), {result['catalog']} items indexed at the start.</p>")  # fmt: skip
    slices = result["slices"]
    head = "".join(f"<th>{s}</th>" for s in slices)
    parts.append(f"<h2>recall@k by channel and slice</h2><table border=1><tr><th>channel</th>{head}</tr>")
    for name, cells in result["recall"].items():
        row = "".join(_cell(cells[s], "recall", "hits", "clicks") for s in slices)
        parts.append(f"<tr><td>{html.escape(name)}</td>{row}</tr>")
    new = result["new_items"]
    parts.append(f"</table><h2>New-item coverage</h2><p>{new['published']} new items, {new['censored_24h']} of "
                 "them with a 24 h window past the day's end: the 24 h column is a lower bound.</p><table border=1>"
                 "<tr><th>channel</th><th>within 1 h</th><th>within 24 h (censored)</th></tr>")  # fmt: skip
    for name, cells in result["coverage"].items():
        row = "".join(_cell(cells[w], "share", "covered", "items") for w in WINDOWS)
        parts.append(f"<tr><td>{html.escape(name)}</td>{row}</tr>")
    return "".join([*parts, "</table>"])


def write_report(result: dict, out_dir: Path) -> list[Path]:
    """``report.json`` and ``report.html`` in ``out_dir`` (whole-file replaces: re-running rewrites them)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "report.json", out_dir / "report.html"]
    paths[0].write_text(json.dumps(result, indent=2, default=str))
    paths[1].write_text(report_html(result))
    return paths


def evaluate_two_tower(settings: Any, dataset: str, start: dt.date, end: dt.date, version: str, run_id: str,
                       cfg: RetrievalEvalConfig, tower: Any = None) -> dict:  # fmt: skip
    """The two-tower version's retrieval report on its window's held-out day ``end``: replayed with the
    version's vectors, clusters on ``tower``'s vectors (the champion content tower) or the raw content vectors;
    written under ``reports/evaluation/<dataset>/two_tower/v<version>`` and logged to run ``run_id``
    (``evaluation/``). A report of the same version, day and config is read back, not recomputed."""
    import mlflow

    from pipelines.catalog import model as catalog_model
    from pipelines.data.contract import Store
    from pipelines.serving.recommend import content_vectors
    from pipelines.training.two_tower import embed_items, embed_users
    from pipelines.training.two_tower_data import read_log

    if not cfg.enabled:
        return empty_evaluation(end, "disabled (evaluation.enabled is false)")
    out_dir = settings.reports_dir / "evaluation" / dataset / "two_tower" / f"v{version}"
    content = getattr(tower, "version", None) or "raw"
    key = {"config": cfg.model_dump(), "day": end.isoformat(), "content_vectors": str(content)}
    if (out_dir / "report.json").exists():
        old = json.loads((out_dir / "report.json").read_text())
        if {name: old.get(name) for name in key} == key:
            return old
    registered = catalog_model("two_tower").registered_name
    wrapper = mlflow.pyfunc.load_model(f"models:/{registered}/{version}").unwrap_python_model()
    window = read_log(Store(settings.data_dir, dataset), start, end)
    vectors = embed_items(wrapper.model, wrapper.encoder, window.items)
    result = replay_window(window, end, vectors, content_vectors(window.items, tower),
                           lambda users, histories: embed_users(wrapper.model, wrapper.encoder, users, histories),
                           wrapper.encoder.history_len, cfg)  # fmt: skip
    result = {"model": "two_tower", "version": str(version), "dataset": dataset, "window": [start.isoformat(),
              end.isoformat()], **key} | result  # fmt: skip
    client = mlflow.MlflowClient()
    for path in write_report(result, out_dir):
        client.log_artifact(run_id, str(path), "evaluation")
    log.info("two_tower v%s retrieval replay of %s: %s", version, end, result.get("skipped") or "report written")
    return result
