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


# The cold path the staged model serves new items with: the untrained row 0 (every training id in the vocabulary,
# no id dropout, new items on the default row: the platform before issue 18) or the learned one (the training
# defaults: rare ids fold into row 0, id dropout; new items on their content neighbours' mean embedding).
COLD_PATHS = {
    "row0": ({"min_count_user": 1, "min_count_item": 1, "min_count_author": 1, "id_dropout": 0.0},
             {"new_item_embedding": "default"}),
    "learned": ({}, {"new_item_embedding": "content_knn"}),
}  # fmt: skip


def _with_cold_path(case: dict, cold_path: str) -> dict:
    train, policy = COLD_PATHS[cold_path]
    arms = {arm: {**case.get(arm, {}), **policy} for arm in ("control", "treatment")}
    arms["control"].setdefault("exposure", {"enabled": False})
    return {**case, **arms, "train": {"epochs": 2, "lr": 0.003, **train}}


def _with_content_prior(case: dict, on: bool) -> dict:
    """Both arms' guaranteed-exposure configs with the content tower's predicted quality as each new item's prior
    (``content_quality_weight`` 1, the default) or without it (0: every new item starts from the pooled CTR)."""
    out = dict(case)
    for arm in ("control", "treatment"):
        exposure = dict(out.get(arm, {}).get("exposure", {}))
        if exposure.get("enabled", True):
            exposure["content_quality_weight"] = 1.0 if on else 0.0
            out[arm] = {**out.get(arm, {}), "exposure": exposure}
    return out


def target_quality(home: str) -> dict:
    """Per author group, over the judged new items: rank correlation of the target the near-line state set and of
    the exposures they got with the items' hidden quality (the truth layer, read here only, to judge)."""
    import glob

    import pandas as pd
    from scipy.stats import spearmanr

    exp = glob.glob(f"{home}/experiments/*")[0]
    judged = pd.read_parquet(f"{exp}/judged_items.parquet").dropna(subset=["target"])
    truth = pd.read_parquet(f"{exp}/data/closed_loop/truth/item_truth.parquet", columns=["item_id", "quality"])
    rows = judged.merge(truth, on="item_id")
    return {str(g): {"n": len(r), "target_rho": float(spearmanr(r["target"], r["quality"]).statistic),
                     "exposure_rho": float(spearmanr(r["exposures"], r["quality"]).statistic)}
            for g, r in rows.groupby("group")}  # fmt: skip


def new_item_ctr(home: str, window: list[str], hours: int = 24) -> dict:
    """Per author group: CTR of new items (impressions in their first ``hours``), authors as units (delta method)."""
    import duckdb

    from pipelines.experiments.stats import compare, moments

    raw = f"{home}/experiments/*/data/closed_loop/raw"
    rows = duckdb.sql(f"""
        WITH p AS (SELECT item_id, author_id, publish_time FROM read_parquet('{raw}/publishes/*/*.parquet')
                   WHERE CAST(publish_time AS DATE) BETWEEN DATE '{window[0]}' AND DATE '{window[1]}'),
             a AS (SELECT DISTINCT unit_id AS author_id, bucket FROM read_parquet('{raw}/assignments/*/*.parquet')
                   WHERE unit_type = 'author'),
             i AS (SELECT item_id, event_time, click FROM read_parquet('{raw}/impressions/*/*.parquet'))
        SELECT a.bucket, p.author_id, count(*) AS n, sum(i.click) AS clicks
        FROM p JOIN i USING (item_id) JOIN a USING (author_id)
        WHERE i.event_time < p.publish_time + INTERVAL {hours} HOUR GROUP BY 1, 2""").fetchall()  # fmt: skip
    groups = {}
    for bucket, _, n, clicks in rows:
        groups.setdefault(bucket, ([], []))[0].append(clicks)
        groups[bucket][1].append(n)
    out = {b: {"ctr": sum(y) / sum(x), "impressions": sum(x)} for b, (y, x) in groups.items()}
    if {"control", "treatment"} <= set(groups):
        c = compare(moments(*groups["control"]), moments(*groups["treatment"]))
        out["treatment_vs_control"] = {"rel_diff": c.rel_diff, "rel_ci": list(c.rel_ci)}
    return out


def run_case(case: str, seed: int, opts: argparse.Namespace) -> dict:
    from pipelines.experiments.closed_loop import ClosedLoopConfig, run_closed_loop
    from pipelines.settings import get_settings

    fields = _with_cold_path(CASES[case], opts.cold_path) if opts.cold_path else CASES[case]
    if opts.content_prior is not None:
        fields = _with_content_prior(fields, opts.content_prior == "on")
    cfg = ClosedLoopConfig(experiment_id=f"bench_{case}", design=opts.design, users=opts.users, seed=seed,
                           pre_days=opts.pre_days, days=opts.days, impressions_per_day=opts.impressions_per_day,
                           retrieval=opts.retrieval,
                           **({"treatment_share": opts.treatment_share} if opts.treatment_share else {}),
                           **fields)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="closed-loop-") as home:
        started = time.perf_counter()
        out = run_closed_loop(get_settings(home=home, profile="local"), cfg)
        wall = time.perf_counter() - started
        new_items = new_item_ctr(home, out["window"]) if cfg.design != "user_split" else {}
        quality = target_quality(home)
    ctr = out["headline"].get("ctr", {})
    return {"case": case, "seed": seed, "cold_path": opts.cold_path, "impressions": out["impressions"],
            "wall_s": wall, "timings": out["timings"], "experiment_days_s": out["experiment_days_s"],
            "target_reach": out["target_reach"], "new_item_share": out["new_item_share"], "ctr": ctr,
            "new_item_ctr": new_items, "target_quality": quality, "content_prior": opts.content_prior,
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
    parser.add_argument(
        "--cold-path",
        choices=list(COLD_PATHS),
        default=None,
        help="Train and serve new items on this cold path in both arms (default: the platform's).",
    )
    parser.add_argument(
        "--content-prior",
        choices=["on", "off"],
        default=None,
        help="The tower's predicted quality as each new item's exposure prior, or not (default: the platform's).",
    )
    parser.add_argument(
        "--retrieval",
        choices=["simulator", "platform"],
        default="simulator",
        help="Who recalls the candidates: the simulator's channel mix (what the figures in benchmarks/README.md "
        "were measured with) or the platform's recall channels (the closed loop's default since; see "
        "benchmarks/closed_loop_recall.py).",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "closed_loop.json")
    opts = parser.parse_args()
    runs = [run_case(case, seed, opts) for case in opts.cases for seed in opts.seeds]
    opts.out.parent.mkdir(exist_ok=True)
    opts.out.write_text(json.dumps(runs, indent=2, default=str))
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
        if run["new_item_ctr"]:
            groups = ", ".join(f"{g} {v['ctr']:.4f} ({v['impressions']:,} imps)" for g, v in run["new_item_ctr"].items()
                               if g != "treatment_vs_control")  # fmt: skip
            lift = run["new_item_ctr"].get("treatment_vs_control", {})
            ci = lift.get("rel_ci", [float("nan")] * 2)
            print(f"{run['case']} seed {run['seed']}: new-item CTR (first 24 h) {groups}; treatment vs control "
                  f"{lift.get('rel_diff', float('nan')):+.2%} [{ci[0]:+.2%}, {ci[1]:+.2%}]")  # fmt: skip
    for run in runs:
        rho = ", ".join(f"{g} target {v['target_rho']:+.3f} exposures {v['exposure_rho']:+.3f} (n={v['n']})"
                        for g, v in run["target_quality"].items())  # fmt: skip
        print(f"{run['case']} seed {run['seed']}: Spearman with hidden quality: {rho}")
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
