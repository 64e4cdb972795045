"""Recall channels on a held-out day, replayed hour by hour: per-channel hit rate and new-item coverage.

    .venv/bin/python benchmarks/recall_channels.py [--seeds 9101 9202 9303] [--days 8] [--users 6000]
        [--k 200] [--per-hour 200] [--out benchmarks/results/recall_channels.json]

Per seed: a fresh simulated log (``design=none``) in ``benchmarks/.work/recall_channels/seed-<seed>``, raw layer.
On the days before the last: a content tower (``fit_tower``, the platform's defaults, seeded) and a two-tower
model (``fit_two_tower``; it reads the raw content vector, as with no champion tower). At the held-out day's
start the catalog is indexed (:class:`~pipelines.retrieval.recall.Recall`: age pools of the two-tower vectors,
category/keyword, content clusters of the tower vectors, look-alike), then the day is replayed an hour at a time:
the hour's new items are published into every channel, up to ``--per-hour`` of the users who clicked in that
hour ask for ``k`` candidates at the hour's end (their two-tower vector and history as of the day's start, their
pre-day clicks as seen), and the hour's clicks feed the look-alike vectors.

Figures per channel (the merged list's ``channels`` say which found each item):

* hit rate: share of a requesting user's clicks in that hour found in the merged list (``any``) or by the channel;
* new-item coverage: share of the day's new items (published before 23:00) returned to anyone within 1 hour of
  publishing, and by the day's end (``day``: at most 24 h, less for items published late).

Hidden truth is not read. Intervals: mean ± 95 % Student-t half-width over seeds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import time
from pathlib import Path

import _paper as paper
import numpy as np
import pandas as pd

log = logging.getLogger("benchmarks.recall_channels")
WORK = paper.ROOT / ".work" / "recall_channels"
HOUR = pd.Timedelta(hours=1)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[9101, 9202, 9303])
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--users", type=int, default=6000)
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--per-hour", type=int, default=200, help="Requests replayed per hour (sampled users).")
    parser.add_argument("--out", type=Path, default=paper.RESULTS / "recall_channels.json")
    return parser.parse_args()


def models(seed: int, args: argparse.Namespace):
    """Simulate, then fit the content tower and the two-tower model on the days before the last."""
    from pipelines.training.content_data import read_window
    from pipelines.training.content_tower import ContentTowerTraining, fit_tower
    from pipelines.training.two_tower import TwoTowerTraining, fit_two_tower
    from pipelines.training.two_tower_data import read_log

    store, cfg = paper.fresh_log(WORK / f"seed-{seed}", seed, args.days, args.users)
    last = cfg.end_date
    items, impressions = read_window(store, cfg.start_date, last - dt.timedelta(days=1), layer="raw")
    tower = fit_tower(items, impressions, ContentTowerTraining(train=ContentTowerTraining().train.model_dump()
                                                                     | {"seed": seed}))  # fmt: skip
    window = read_log(store, cfg.start_date, last, layer="raw")
    two = fit_two_tower(window, last, TwoTowerTraining(train=TwoTowerTraining().train.model_dump() | {"seed": seed}))
    return window, last, tower, two


def run_seed(seed: int, args: argparse.Namespace) -> dict:
    from pipelines.retrieval.recall import Recall
    from pipelines.training.content_tower import embed_items as tower_embed
    from pipelines.training.two_tower import embed_items, embed_users
    from pipelines.training.two_tower_data import clicks_of, recall_task

    t0 = time.perf_counter()
    window, last, tower, two = models(seed, args)
    start = pd.Timestamp(last, tz="UTC")
    items = window.items.reset_index(drop=True)
    vectors = embed_items(two.model, two.encoder, items)
    content = np.stack(tower_embed(tower.model, tower.encoder, items)["vector"].to_list())
    old = (items["publish_time"] < start).to_numpy()
    recall = Recall.build(items[old], vectors[old], content[old], start)
    task = recall_task(window, last, 20)
    users = embed_users(two.model, two.encoder, task.users, task.histories)
    row = {int(u): r for r, u in enumerate(task.users["user_id"].tolist())}
    held = clicks_of(window.impressions[window.impressions["event_time"] >= start])
    new_items = items[~old]
    first_seen: dict[str, dict[int, pd.Timestamp]] = {}
    hits: dict[str, list[int]] = {}
    rng = np.random.default_rng(seed)
    for hour in range(24):
        end = start + (hour + 1) * HOUR
        batch = new_items[(new_items["publish_time"] >= end - HOUR) & (new_items["publish_time"] < end)]
        recall.publish(batch, vectors[batch.index], content[batch.index], end)
        clicks = held[(held["event_time"] >= end - HOUR) & (held["event_time"] < end)]
        askers = clicks["user_id"].unique()
        askers = rng.choice(askers, min(args.per_hour, len(askers)), replace=False) if len(askers) else askers
        for user in askers.tolist():
            r = row[int(user)]
            merged = recall.recall(users[r], task.histories[r].tolist(), end, args.k, task.seen[r])
            found = dict(zip(merged.ids.tolist(), merged.channels, strict=True))
            for item, channels in found.items():
                for name in ("any", *channels):
                    first_seen.setdefault(name, {}).setdefault(item, end)
            for item in clicks.loc[clicks["user_id"] == user, "item_id"].tolist():
                for name in ("any", *recall.cfg.quotas):
                    tally = hits.setdefault(name, [0, 0])
                    tally[0] += int(item in found if name == "any" else name in found.get(item, ()))
                    tally[1] += 1
        engaged = clicks[clicks["item_id"].isin(new_items["item_id"])]
        if len(engaged):
            recall.engage(engaged["item_id"].to_numpy(), users[[row[int(u)] for u in engaged["user_id"]]])
        recall.expire(end)
    judged = new_items[new_items["publish_time"] < start + 23 * HOUR]
    published = dict(zip(judged["item_id"].tolist(), judged["publish_time"], strict=True))
    coverage = {name: {"1h": float(np.mean([i in seen and seen[i] - published[i] <= HOUR for i in published])),
                       "day": float(np.mean([i in seen for i in published]))}
                for name, seen in first_seen.items()}  # fmt: skip
    rates = {name: h / n for name, (h, n) in hits.items() if n}
    info = {"seed": seed, "new_items": len(judged), "catalog": int(old.sum()), "seconds": time.perf_counter() - t0}
    log.info("seed %d: coverage %s", seed, {k: round(v["1h"], 3) for k, v in coverage.items()})
    return {"info": info, "coverage": coverage, "hit_rate": rates}


def main() -> None:
    args = parse_args()
    paper.setup_logging()
    logging.getLogger("pipelines.training.trainer").setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(1)
    runs = [run_seed(seed, args) for seed in args.seeds]
    names = sorted({n for r in runs for n in r["coverage"]}, key=lambda n: (n != "any", n))
    print(f"| channel | new items covered within 1 h | by the day's end | hit rate of the hour's clicks (k={args.k}) |")
    print("|---|---:|---:|---:|")
    for name in names:
        cells = [paper.t_interval([r["coverage"].get(name, {}).get(w, 0.0) for r in runs]) for w in ("1h", "day")]
        rate = paper.t_interval([r["hit_rate"].get(name, 0.0) for r in runs])
        print(f"| {name} | " + " | ".join(paper.fmt_mean(c) for c in [*cells, rate]) + " |")
    for run in runs:
        print(f"seed {run['info']['seed']}: {run['info']['new_items']} new items judged, catalog "
              f"{run['info']['catalog']}, {run['info']['seconds']:.0f} s")  # fmt: skip
    paper.write_json(args.out, {"args": vars(args), "machine": paper.machine(), "runs": runs})


if __name__ == "__main__":
    main()
