"""Recall channels on a held-out day, replayed hour by hour: per-channel hit rate and new-item coverage.

    .venv/bin/python benchmarks/recall_channels.py [--seeds 9101 9202 9303] [--days 8] [--users 6000]
        [--k 200] [--per-hour 200] [--publish-rate 2.0] [--out benchmarks/results/recall_channels.json]

The replay is the platform's own (:func:`pipelines.evaluation.retrieval.replay_window`, what the two-tower's
train hook writes into its evaluation report). Per seed: a fresh simulated log (``design=none``) in
``benchmarks/.work/recall_channels/seed-<seed>``, raw layer.
On the days before the last: a content tower (``fit_tower``, the platform's defaults, seeded) and a two-tower
model (``fit_two_tower``; it reads the raw content vector, as with no champion tower). At the held-out day's
start the catalog is indexed (:class:`~pipelines.retrieval.recall.Recall`: age pools of the two-tower vectors,
category/keyword, content clusters of the tower vectors, look-alike), then the day is replayed an hour at a time:
the hour's new items are published into every channel, up to ``--per-hour`` of the users who clicked in that
hour ask for ``k`` candidates at the hour's end (their two-tower vector and history as of the day's start, their
pre-day clicks as seen), and the hour's clicks feed the look-alike vectors.

Figures per channel (the merged list's ``channels`` say which found each item):

* hit rate (recall@k): share of a requesting user's clicks in that hour found in the merged list (``any``) or by
  the channel; a (user, item) pair counts once an hour, a click on an item seen before the day is not judged. The
  second table splits it by cold-start slice: new/warm user (no click before the day), new/warm item (published
  on the day);
* new-item coverage: share of the day's new items returned to anyone within 1 hour of publishing, and by the
  day's end (``day``: the report's censored ``24h`` figure, at most 24 h, less for items published late).

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

log = logging.getLogger("benchmarks.recall_channels")
WORK = paper.ROOT / ".work" / "recall_channels"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[9101, 9202, 9303])
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--users", type=int, default=6000)
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--per-hour", type=int, default=200, help="Requests replayed per hour (sampled users).")
    parser.add_argument("--publish-rate", type=float, default=None,
                        help="Items per author per day (simulator default 0.25: ~5 new items an hour).")  # fmt: skip
    parser.add_argument("--out", type=Path, default=paper.RESULTS / "recall_channels.json")
    return parser.parse_args()


def models(seed: int, args: argparse.Namespace):
    """Simulate, then fit the content tower and the two-tower model on the days before the last."""
    from pipelines.training.content_data import read_window
    from pipelines.training.content_tower import ContentTowerTraining, fit_tower
    from pipelines.training.two_tower import TwoTowerTraining, fit_two_tower
    from pipelines.training.two_tower_data import read_log

    store, cfg = paper.fresh_log(
        WORK / f"seed-{seed}",
        seed,
        args.days,
        args.users,
        **({"publish_rate": args.publish_rate} if args.publish_rate else {}),
    )
    last = cfg.end_date
    items, impressions = read_window(store, cfg.start_date, last - dt.timedelta(days=1), layer="raw")
    tower = fit_tower(items, impressions, ContentTowerTraining(train=ContentTowerTraining().train.model_dump()
                                                                     | {"seed": seed}))  # fmt: skip
    window = read_log(store, cfg.start_date, last, layer="raw")
    two = fit_two_tower(window, last, TwoTowerTraining(train=TwoTowerTraining().train.model_dump() | {"seed": seed}))
    return window, last, tower, two


def run_seed(seed: int, args: argparse.Namespace) -> dict:
    from pipelines.evaluation.retrieval import RetrievalEvalConfig, replay_window
    from pipelines.training.content_tower import embed_items as tower_embed
    from pipelines.training.two_tower import embed_items, embed_users

    t0 = time.perf_counter()
    window, last, tower, two = models(seed, args)
    items = window.items.reset_index(drop=True)
    vectors = embed_items(two.model, two.encoder, items)
    content = np.stack(tower_embed(tower.model, tower.encoder, items)["vector"].to_list())
    cfg = RetrievalEvalConfig(k=args.k, per_hour=args.per_hour, seed=seed)
    out = replay_window(window, last, vectors, content, lambda users, histories: embed_users(two.model, two.encoder,
                        users, histories), two.encoder.history_len, cfg)  # fmt: skip
    if out.get("skipped"):
        raise RuntimeError(f"seed {seed}: {out['skipped']}")
    coverage = {name: {"1h": c["1h"]["share"], "day": c["24h"]["share"]} for name, c in out["coverage"].items()}
    rates = {name: cells["all"]["recall"] for name, cells in out["recall"].items() if cells["all"]["clicks"]}
    info = {"seed": seed, "new_items": out["new_items"]["published"], "catalog": out["catalog"],
            "requests": out["requests"], "seconds": time.perf_counter() - t0}  # fmt: skip
    log.info("seed %d: coverage %s", seed, {k: round(v["1h"] or 0.0, 3) for k, v in coverage.items()})
    return {"info": info, "coverage": coverage, "hit_rate": rates, "recall": out["recall"],
            "new_items": out["new_items"]}  # fmt: skip


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
        cells = [paper.t_interval([r["coverage"].get(name, {}).get(w) or 0.0 for r in runs]) for w in ("1h", "day")]
        rate = paper.t_interval([r["hit_rate"].get(name, 0.0) for r in runs])
        print(f"| {name} | " + " | ".join(paper.fmt_mean(c) for c in [*cells, rate]) + " |")
    slices = ("all", "new_user", "warm_user", "new_item", "warm_item")
    print(f"\n| channel | recall@{args.k} " + " | ".join(s.replace("_", " ") for s in slices) + " |")
    print("|---|" + "---:|" * len(slices))
    for name in names:
        cells = [paper.t_interval([r["recall"].get(name, {}).get(s, {}).get("recall") or 0.0 for r in runs])
                 for s in slices]  # fmt: skip
        print(f"| {name} | " + " | ".join(paper.fmt_mean(c) for c in cells) + " |")
    clicks = [np.mean([r["recall"]["any"][s]["clicks"] for r in runs]) for s in slices]
    print("| clicks judged (mean per seed) | " + " | ".join(f"{c:.0f}" for c in clicks) + " |")
    for run in runs:
        print(f"seed {run['info']['seed']}: {run['info']['new_items']} new items judged, catalog "
              f"{run['info']['catalog']}, {run['info']['seconds']:.0f} s")  # fmt: skip
    paper.write_json(args.out, {"args": vars(args), "machine": paper.machine(), "runs": runs})


if __name__ == "__main__":
    main()
