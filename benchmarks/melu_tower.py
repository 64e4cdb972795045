"""MeLU with and without the content tower's item vector on MovieLens-1M: new items, and warm for regressions.

    .venv/bin/python benchmarks/melu_tower.py [--seeds 5101 5202 5303] [--epochs 8] [--out PATH.json]

writes ``benchmarks/results/melu_tower.json`` and prints per-seed MAE and the paired differences.

Data: MeLU's split of ML-1M built in memory (``load_ml1m`` + ``melu_split`` + ``join_rows``: the same frames
``coldstart ingest movielens`` writes, without writing them). Scenarios: ``new_item`` (existing users × movies
released after 1997, never seen in training) and ``warm`` (existing users × existing items: MeLU's meta-training
users, in-sample, scored on a fixed subsample of ``--warm-users`` users to keep the run short).

Arms, per seed, both built by ``pipelines.training.melu.build_melu`` and trained by ``fit_melu`` (the code of
``train_melu``) at the MeLU family's demo settings (β = 5e-4, 8 epochs; the paper's α = 5e-6):
    base: ``MeLUConfig()`` (user fields, release year, genre multi-hot).
    tower: ``MeLUConfig(content_tower=True)``: plus the content tower's 16-d item vector, the tower trained on the
        warm scenario's ratings (rating >= 4 = engaged) with ``MovieLensTowerConfig()`` and the same seed;
        new items are embedded from their genres, title words and release year alone.

Statistics: MAE pooled over each scenario's query ratings, per seed; per seed also the paired per-user MAE
difference (tower − base) with a t-interval over users; across seeds the median and a 95% t-interval (scipy,
n − 1 degrees of freedom) of the per-seed differences. Negative = the tower helps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from pipelines.data.movielens import MeluSplitConfig, join_rows, load_ml1m, melu_split
from pipelines.models.melu import MeLUConfig
from pipelines.training.melu import build_melu, fit_melu, tasks_of

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("new_item", "warm")
ARMS = ("base", "tower")


def load(warm_users: int) -> pd.DataFrame:
    """MeLU's rows; every warm user trains, only the first ``warm_users`` (by id) are scored (``scored``)."""
    users, items, ratings = load_ml1m()
    rows = join_rows(melu_split(users, items, ratings, MeluSplitConfig()), users, items)
    rows = rows[rows["scenario"].isin(SCENARIOS)].reset_index(drop=True)
    scored_warm = np.sort(rows.loc[rows["scenario"] == "warm", "user_id"].unique())[:warm_users]
    return rows.assign(scored=(rows["scenario"] != "warm") | rows["user_id"].isin(scored_warm))


def per_user_errors(model, tasks) -> list[np.ndarray]:
    """Absolute errors on each task's query set after adapting on its support set."""
    return [np.abs((model.predict(s, q) - q["rating"]).numpy()) for s, q in tasks]


def run_arm(rows: pd.DataFrame, arm: str, seed: int, args: argparse.Namespace) -> dict:
    """Train one arm with one seed; per scenario the per-user absolute errors, and timings."""
    cfg = MeLUConfig(meta_lr=args.meta_lr, content_tower=arm == "tower")
    start = time.perf_counter()
    encoder, model = build_melu(rows, cfg, seed)
    tasks = tasks_of(rows, encoder)
    scored = {s: tasks_of(rows[rows["scored"] & (rows["scenario"] == s)], encoder)[s] for s in SCENARIOS}
    prepare_s = time.perf_counter() - start
    start = time.perf_counter()
    losses = fit_melu(model, tasks["warm"], args.epochs, seed)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    errors = {s: per_user_errors(model, scored[s]) for s in SCENARIOS}
    timings = {"prepare_s": prepare_s, "train_s": train_s, "evaluate_s": time.perf_counter() - start}
    tower = encoder.tower.metrics if encoder.tower else {}
    return {"errors": errors, "meta_loss": losses, "timings": timings, "tower": tower}


def paired(base: list[np.ndarray], tower: list[np.ndarray]) -> dict:
    """Pooled MAE of both arms and the per-user paired difference (tower − base) with a 95% t-interval."""
    diff = np.array([t.mean() - b.mean() for b, t in zip(base, tower, strict=True)])
    half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
    return {"users": len(diff), "mae_base": float(np.concatenate(base).mean()),
            "mae_tower": float(np.concatenate(tower).mean()), "user_delta": float(diff.mean()),
            "user_delta_ci": [float(diff.mean() - half), float(diff.mean() + half)]}  # fmt: skip


def across_seeds(per_seed: list[dict]) -> dict:
    """Median MAE per arm, and the mean, median and 95% t-interval of the per-seed MAE differences."""
    delta = np.array([r["mae_tower"] - r["mae_base"] for r in per_seed])
    half = stats.t.ppf(0.975, len(delta) - 1) * delta.std(ddof=1) / np.sqrt(len(delta)) if len(delta) > 1 else 0.0
    return {"median_mae_base": statistics.median(r["mae_base"] for r in per_seed),
            "median_mae_tower": statistics.median(r["mae_tower"] for r in per_seed),
            "delta_mean": float(delta.mean()), "delta_median": float(np.median(delta)),
            "delta_ci": [float(delta.mean() - half), float(delta.mean() + half)],
            "deltas": delta.tolist()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[5101, 5202, 5303])
    parser.add_argument("--epochs", type=int, default=8, help="MeLU meta-training epochs (the demo's 8).")
    parser.add_argument("--meta-lr", type=float, default=5e-4, help="β (the MeLU family's demo value).")
    parser.add_argument("--warm-users", type=int, default=500, help="Warm users scored (all warm users train).")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "melu_tower.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = load(args.warm_users)
    runs = []
    for seed in args.seeds:
        arms = {arm: run_arm(rows, arm, seed, args) for arm in ARMS}
        result = {s: paired(arms["base"]["errors"][s], arms["tower"]["errors"][s]) for s in SCENARIOS}
        runs.append({"seed": seed, "scenarios": result, "tower": arms["tower"]["tower"],
                     "timings": {a: arms[a]["timings"] for a in ARMS},
                     "meta_loss": {a: arms[a]["meta_loss"] for a in ARMS}})  # fmt: skip
        for s in SCENARIOS:
            r = result[s]
            print(f"seed {seed} {s}: MAE base {r['mae_base']:.4f} tower {r['mae_tower']:.4f} "
                  f"per-user Δ {r['user_delta']:+.4f} [{r['user_delta_ci'][0]:+.4f}, {r['user_delta_ci'][1]:+.4f}]"
                  f" ({r['users']} users)", flush=True)  # fmt: skip
        print(f"seed {seed}: tower val triplet accuracy {arms['tower']['tower'].get('val_triplet_accuracy', 0):.3f};"
              f" timings {arms['base']['timings']} / {arms['tower']['timings']}", flush=True)  # fmt: skip
    summary = {s: across_seeds([r["scenarios"][s] for r in runs]) for s in SCENARIOS}
    for s, v in summary.items():
        print(f"{s}: median MAE base {v['median_mae_base']:.4f} tower {v['median_mae_tower']:.4f}; "
              f"Δ mean {v['delta_mean']:+.4f} [{v['delta_ci'][0]:+.4f}, {v['delta_ci'][1]:+.4f}]")  # fmt: skip
    wall = time.perf_counter() - start
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    machine = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count()}
    out = {"benchmark": "melu_tower", "settings": settings, "summary": summary, "runs": runs, "wall_s": wall,
           "machine": machine}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wall {wall:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()
