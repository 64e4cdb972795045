"""Closed-loop cold-start experiments: guaranteed exposure and a fixed boost against control, and throughput.

Each case is one :func:`pipelines.experiments.closed_loop.run_closed_loop` in a fresh ``COLDSTART_HOME``: a
legacy-feed pre-period, the ranker trained and gated, then an author split served by the platform feed.
Per case and seed it records the share of judged new items (their 24 h window inside the logs) that reached the
target the near-line state set them, their over-exposure, overall CTR of treatment against control (relative
difference with its delta-method interval), and the wall time of the experiment days.

    .venv/bin/python benchmarks/closed_loop.py --seeds 101 202 303
    .venv/bin/python benchmarks/closed_loop.py --cases guaranteed --seeds 404 --users 20000 \\
        --impressions-per-day 1000000 --days 1            # throughput of a 1M-impression closed-loop day

Raw results go to ``benchmarks/results/closed_loop.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

CASES = {
    # control: the platform's ranker, no new-item policy
    "guaranteed": {"treatment": {"exposure": {"min_target": 20, "max_target": 80}}},
    "fixed_boost": {"treatment": {"boost_strength": 2.0, "exposure": {"enabled": False, "min_target": 20,
                                                                       "max_target": 80}}},
}  # fmt: skip


def run_case(case: str, seed: int, opts: argparse.Namespace) -> dict:
    from pipelines.experiments.closed_loop import ClosedLoopConfig, run_closed_loop
    from pipelines.settings import get_settings

    cfg = ClosedLoopConfig(experiment_id=f"bench_{case}", design=opts.design, users=opts.users, seed=seed,
                           pre_days=opts.pre_days, days=opts.days, impressions_per_day=opts.impressions_per_day,
                           **({"treatment_share": opts.treatment_share} if opts.treatment_share else {}),
                           **CASES[case])  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="closed-loop-") as home:
        started = time.perf_counter()
        out = run_closed_loop(get_settings(home=home, profile="local"), cfg)
        wall = time.perf_counter() - started
    ctr = out["headline"].get("ctr", {})
    return {"case": case, "seed": seed, "impressions": out["impressions"], "wall_s": wall, "timings": out["timings"],
            "experiment_days_s": out["experiment_days_s"],
            "target_reach": out["target_reach"], "new_item_share": out["new_item_share"], "ctr": ctr,
            "staged": out["staged"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[101, 202, 303])
    parser.add_argument(
        "--design", default="author_split", choices=["author_split", "user_split", "balanced_author_split"]
    )
    parser.add_argument(
        "--treatment-share",
        type=float,
        default=None,
        help="Treatment's share (a balanced author split: each of control and treatment).",
    )
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--pre-days", type=int, default=4)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--impressions-per-day", type=int, default=None)
    opts = parser.parse_args()
    runs = [run_case(case, seed, opts) for case in opts.cases for seed in opts.seeds]
    out = Path(__file__).parent / "results" / "closed_loop.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(runs, indent=2, default=str))
    print("| case | seed | arm | judged | reached | over-exposure | CTR rel. diff (95% CI) | experiment days s |")
    print("|---|---:|---|---:|---:|---:|---|---:|")
    for run in runs:
        ctr = run["ctr"]
        ci = ctr.get("rel_ci") or [float("nan")] * 2
        for arm, reach in run["target_reach"].items():
            print(f"| {run['case']} | {run['seed']} | {arm} | {reach['judged']} | {reach['reached']:.3f} | "
                  f"{reach['over_exposure']:.2f} | {ctr.get('rel_diff', float('nan')):+.2%} "
                  f"[{ci[0]:+.2%}, {ci[1]:+.2%}] | {run['timings']['simulate_and_serve_s']:.0f} |")  # fmt: skip
    for run in runs:
        shares = ", ".join(f"{arm} {share:.2%}" for arm, share in run["new_item_share"].items())
        print(f"{run['case']} seed {run['seed']}: new-item share of the impressions credited to each group: {shares}")
    for run in runs:
        days = ", ".join(f"{s:.0f}" for s in run["experiment_days_s"])
        print(
            f"{run['case']} seed {run['seed']}: experiment days {days} s (traffic served by the platform feed, then"
            f" validate, featurize, materialize); {run['impressions']:,} impressions in all"
        )
    for case in opts.cases:
        treated = [r["target_reach"].get("treatment", {}).get("reached") for r in runs if r["case"] == case]
        treated = [t for t in treated if t is not None]
        if treated:
            print(f"{case}: treatment reach median {statistics.median(treated):.3f} over {len(treated)} seeds")


if __name__ == "__main__":
    main()
