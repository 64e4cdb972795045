"""Two-tower retrieval (MODELS.md §8) against popularity and item-CF: recall@k on the held-out day, over seeds.

    .venv/bin/python benchmarks/two_tower.py [--seeds 7101 7202 7303] [--days 8] [--users 6000] [--k 100 20]
        [--variants counts streaming] [--epochs N] [--config JSON] [--out benchmarks/results/two_tower.json]

Data: per seed, a fresh simulated log (``design=none``, the simulator's seed = the seed) in
``benchmarks/.work/two_tower/seed-<seed>``, raw layer. The window is every simulated day; its last day is held out
(what the ``retrieval`` family's train hook does): the model trains on the clicks of the days before it
(``pipelines.training.two_tower.fit_two_tower`` with its defaults and the seed; the held-out day's clicks only
pick the epoch by early stopping), and the baselines read the same clicks. No content tower is trained here: the
item tower reads the raw content vector (what it does when there is no ``champion`` tower).

Recall@k (``pipelines.training.two_tower_data.recall_task``): per user who clicked on the held-out day, the query
is the user's profile and clicks before the day; items the user clicked before are filtered out; recall = share
of the user's held-out clicks in the top k. Slices, each ranked within its own pool (as serving's age pools are):
``all`` (every item published by the day's end), ``warm`` (items with training impressions), ``new`` (published
on the held-out day or without a training impression).

Methods: the two-tower model per ``--variants`` (the logQ correction's p_j from window counts, the default; from
the paper's streaming estimate; ``none``: no correction); popularity (training clicks; ties in seeded random
order, so on new items it is random); item-CF (sim(i, j) = |N(i)∩N(j)| / sqrt(|N(i)||N(j)|) over training clicks,
scored from the user's training clicks; popularity breaks ties). Intervals: mean ± 95 % Student-t half-width over
seeds, and of the per-seed paired differences.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import time
from pathlib import Path

import _paper as paper

log = logging.getLogger("benchmarks.two_tower")

WORK = paper.ROOT / ".work" / "two_tower"
SLICES = ("all", "warm", "new")
BASELINES = ("popularity", "item_cf")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[7101, 7202, 7303])
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--users", type=int, default=6000)
    parser.add_argument("--k", type=int, nargs="+", default=[100, 20])
    parser.add_argument("--variants", nargs="+", default=["counts", "streaming"],
                        choices=["counts", "streaming", "none"], help="logQ sources of the two-tower.")  # fmt: skip
    parser.add_argument("--epochs", type=int, help="Training epochs (default: the model's).")
    parser.add_argument("--config", type=json.loads, default={},
                        help='TwoTowerTraining overrides besides logq, e.g. \'{"model": {"dim": 64}}\'.')  # fmt: skip
    parser.add_argument("--out", type=Path, default=paper.RESULTS / "two_tower.json")
    return parser.parse_args()


def simulate(seed: int, args: argparse.Namespace):
    """A fresh log for ``seed``: (store, first day, last day)."""
    store, cfg = paper.fresh_log(WORK / f"seed-{seed}", seed, args.days, args.users)
    return store, cfg.start_date, cfg.end_date


def run_seed(seed: int, args: argparse.Namespace) -> dict:
    """Simulate, train each variant, score every method on every slice and k."""
    from pipelines.training.two_tower import TwoTowerTraining, fit_two_tower, two_tower_scorer
    from pipelines.training.two_tower_data import (
        evaluate_recall,
        item_cf_scorer,
        popularity_scorer,
        read_log,
        recall_task,
    )

    t0 = time.perf_counter()
    store, first, last = simulate(seed, args)
    window = read_log(store, first, last, layer="raw")
    task = recall_task(window, last, TwoTowerTraining().data.history_len)
    scorers = {"popularity": popularity_scorer(task, seed), "item_cf": item_cf_scorer(task, seed)}
    info = {"seed": seed, "catalog": len(window.items), "impressions": len(window.impressions),
            "pools": {s: len(task.pools[s]) for s in SLICES}, "simulate_s": time.perf_counter() - t0}  # fmt: skip
    for variant in args.variants:
        t1 = time.perf_counter()
        train = TwoTowerTraining().train.model_dump() | {"seed": seed}
        train |= {"epochs": args.epochs} if args.epochs else {}
        config = {**args.config, "model": {**args.config.get("model", {}), "logq": variant}, "train": train}
        fitted = fit_two_tower(window, last, TwoTowerTraining(**config))
        scorers[f"two_tower_{variant}"] = two_tower_scorer(fitted.model, fitted.encoder, task, window.items)
        info[f"{variant}_train_s"] = time.perf_counter() - t1
        info[f"{variant}_counts"] = fitted.counts
    metrics = {}
    for k in args.k:
        result = evaluate_recall(task, scorers, k)
        metrics[k] = {s: {m: result[s].get(m) for m in scorers} | {"users": result[s]["users"]} for s in SLICES}
    log.info("seed %d: %s", seed, {s: {m: round(v, 3) for m, v in r.items()} for s, r in metrics[args.k[0]].items()})
    return {"info": info, "metrics": metrics}


def summarise(runs: list[dict], args: argparse.Namespace) -> dict:
    """Each method's recall per k and slice over seeds, and each variant's paired difference from each baseline."""
    out: dict = {}
    for k in args.k:
        out[k] = {}
        for s in SLICES:
            cell = {m: paper.t_interval([r["metrics"][k][s][m] for r in runs]) for m in runs[0]["metrics"][k][s]}
            for variant in args.variants:
                mine = [r["metrics"][k][s][f"two_tower_{variant}"] for r in runs]
                for base in BASELINES:
                    theirs = [r["metrics"][k][s][base] for r in runs]
                    diffs = [a - b for a, b in zip(mine, theirs, strict=True) if a is not None and b is not None]
                    cell[f"two_tower_{variant}_minus_{base}"] = paper.t_interval(diffs)
            out[k][s] = cell
    return out


def table(summary: dict, args: argparse.Namespace) -> str:
    lines = []
    for k in args.k:
        lines += [f"recall@{k}", "| method | " + " | ".join(SLICES) + " |", "|---|" + "---:|" * len(SLICES)]
        methods = [*BASELINES, *(f"two_tower_{v}" for v in args.variants)]
        methods += [f"two_tower_{v}_minus_{b}" for v in args.variants for b in BASELINES]
        for m in methods:
            lines.append(f"| {m} | " + " | ".join(paper.fmt_mean(summary[k][s].get(m)) for s in SLICES) + " |")
        users = " | ".join(f"{summary[k][s]['users']['mean']:.0f}" for s in SLICES)
        lines += [f"| users (mean) | {users} |", ""]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    paper.setup_logging()
    logging.getLogger("pipelines.training.trainer").setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(1)  # the machine is shared; the towers are small
    started = time.perf_counter()
    runs = [run_seed(seed, args) for seed in args.seeds]
    summary = summarise(runs, args)
    print(table(summary, args))
    for run in runs:
        info = run["info"]
        trained = ", ".join(f"{v} {info[f'{v}_train_s']:.0f} s ({info[f'{v}_counts']['train_pairs']:,} pairs, "
                            f"best epoch {info[f'{v}_counts']['best_epoch']})" for v in args.variants)  # fmt: skip
        print(f"seed {info['seed']}: {info['catalog']} items, {info['impressions']:,} impressions, pools "
              f"{info['pools']}; trained {trained}")  # fmt: skip
    print(f"total {time.perf_counter() - started:.0f} s on {dt.date.today()}")
    paper.write_json(args.out, {"args": vars(args), "machine": paper.machine(), "runs": runs, "summary": summary})


if __name__ == "__main__":
    main()
