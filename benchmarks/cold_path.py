"""The served cold path on new items: an untrained row 0 against learned defaults and content-based init.

For each seed a simulated platform is built (simulate, validate, features, Feast: ``_paper.build_platform``),
then ESMM is trained through the platform's own ``train_for_run`` and scored through ``evaluate_model``, which
runs the ranker bento's code (``RankerCore.score_frame`` with the policies given), on the two held-out days:

* ``row0``: every training id in the vocabulary and no id dropout (the platform before issue 18), new items on
  the default row: row 0 never gets a gradient;
* ``learned``: the learned default (ids under the minimum counts fold into row 0, 2% id dropout), new items on
  the default row;
* ``learned_knn``: the same model, new items on the mean ID embedding of their content-nearest well-exposed
  items (``content_knn`` over the raw content vectors the items table carries);
* ``learned_knn_tower``: the same, neighbours found by the content tower's vectors (when the platform has them).

Per arm: CTR AUC and calibration (mean pCTR / observed CTR) on the new-item slice, and CTR AUC on the warm slices;
differences against ``row0`` are paired by seed (mean and 95% t interval over seeds).

    .venv/bin/python benchmarks/cold_path.py --seeds 4101 4202 4303
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import time

from _paper import RESULTS, build_platform, default_home, setup_logging, sim_config, t_interval

log = logging.getLogger("benchmarks.cold_path")

ROW0 = {"min_count_user": 1, "min_count_item": 1, "min_count_author": 1, "id_dropout": 0.0}
ARMS = {
    "row0": (ROW0, {"new_item_embedding": "default"}),
    "learned": ({}, {"new_item_embedding": "default"}),
    "learned_knn": ({}, {"new_item_embedding": "content_knn", "knn_vectors": "raw"}),
    "learned_knn_tower": ({}, {"new_item_embedding": "content_knn", "knn_vectors": "tower"}),
}
SLICES = {"new items": "item=new", "warm items": "item=warm", "new users": "user=new", "overall": "overall"}


def run_arm(p, arm: str, opts: argparse.Namespace) -> dict:
    """Train (or reuse) the arm's model and evaluate it with the arm's policies; per slice AUC and calibration."""
    from pipelines.evaluation.api import evaluate_model
    from pipelines.evaluation.config import EvaluationConfig
    from pipelines.serving.policies import PolicyConfig
    from pipelines.training.api import train_for_run

    train, policies = ARMS[arm]
    if policies.get("knn_vectors") == "tower":
        train_tower(p)
    known = set(PolicyConfig.model_fields)
    policies = {k: v for k, v in policies.items() if k in known}  # knn_vectors only once the tower is wired
    first, last = p.days[1], p.days[-3]
    config = {"epochs": opts.epochs, "lr": 0.003, "seed": 1, **train}
    trained = train_for_run("esmm", "sim", first, last, {}, config, settings=p.settings)  # reused when trained
    evaluation = EvaluationConfig(n_bootstrap=0, eval_days=2, policies=policies,
                                  gate={"allow_skipped_cold_checks": True})  # fmt: skip
    result = evaluate_model(p.settings, "esmm", "sim", config=evaluation)
    out = {"version": trained["version"], "policies": policies}
    for label, name in SLICES.items():
        entry = result["slices"].get(name, {})
        ctr = entry.get("tasks", {}).get("ctr", {})
        cand = ctr.get("candidate", {})
        out[label] = {"rows": entry.get("count", 0), "positives": ctr.get("positives"),
                      "auc": (cand.get("auc") or {}).get("value"),
                      "calibration": (cand.get("calibration") or {}).get("value"),
                      "scoring": entry.get("scoring")}  # fmt: skip
    return out


def train_tower(p) -> None:
    """The content tower on the rankers' window, through its catalog hook (it sets `champion` when it clears its
    floor; the ranker's content-kNN then finds neighbours in its space)."""
    from pipelines.catalog import model as catalog_model
    from pipelines.training.config import TrainRequest

    entry = catalog_model("content_tower")
    result = entry.call("train", p.settings, entry, TrainRequest(dataset="sim", start=p.days[1], end=p.days[-3]))
    log.info("content tower: %s", {k: v for k, v in result.items() if k in ("version", "gate", "metrics")})


def one_seed(seed: int, opts: argparse.Namespace) -> dict:
    sim = sim_config(days=opts.days, users=opts.users, seed=seed)
    home = default_home(sim).with_name(f"cold-path-{seed}-{opts.users}-{opts.days}")
    started = time.perf_counter()
    p = build_platform(home, sim)
    runs = {arm: run_arm(p, arm, opts) for arm in opts.arms}
    return {"seed": seed, "seconds": time.perf_counter() - started, "arms": runs}


def summarise(runs: list[dict], arms: list[str]) -> list[str]:
    lines = ["| arm | new items AUC | new items calibration | warm items AUC | new users AUC | "
             "Δ new-item AUC vs row0 (pts) | Δ warm AUC vs row0 (pts) |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip

    def values(arm, label, key):
        return [r["arms"][arm][label][key] for r in runs if r["arms"][arm][label][key] is not None]

    def fmt(stats, scale=1.0, digits=4, sign=""):
        if stats["mean"] is None:
            return "–"
        low, high = stats["ci"]
        half = (high - low) / 2 if low is not None else float("nan")
        return f"{stats['mean'] * scale:{sign}.{digits}f} ± {half * scale:.{digits}f}"

    for arm in arms:
        row = [
            fmt(t_interval(values(arm, label, key)))
            for label, key in (
                ("new items", "auc"),
                ("new items", "calibration"),
                ("warm items", "auc"),
                ("new users", "auc"),
            )
        ]
        deltas = []
        for label in ("new items", "warm items"):
            paired = [r["arms"][arm][label]["auc"] - r["arms"]["row0"][label]["auc"] for r in runs]
            deltas.append(fmt(t_interval(paired), 100, 2, "+") if arm != "row0" else "–")
        lines.append(f"| {arm} | " + " | ".join(row + deltas) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[4101, 4202, 4303])
    parser.add_argument("--users", type=int, default=8000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    opts = parser.parse_args()
    setup_logging()
    runs = [one_seed(seed, opts) for seed in opts.seeds]
    lines = summarise(runs, opts.arms)
    print("\n".join(lines))
    for run in runs:
        knn = run["arms"].get("learned_knn", {}).get("new items", {}).get("scoring")
        print(f"seed {run['seed']}: {run['seconds']:.0f} s; new-item rows scored by: {knn}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "cold_path.json"
    out.write_text(json.dumps({"args": vars(opts), "runs": runs, "table": lines, "date": str(dt.date.today())},
                              indent=2, default=str))  # fmt: skip
    print(f"written {out}")


if __name__ == "__main__":
    main()
