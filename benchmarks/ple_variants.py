"""PLE, PLE + POSO, PLE + UIE and PLE + UIE + POSO on the simulator: CTR AUC and GAUC on cold-start slices.

    .venv/bin/python benchmarks/ple_variants.py [--seeds 1 2 3] [--days 8] [--users 12000] [--epochs 1]
        [--sparse-below 40] [--home DIR] [--out benchmarks/results/ple_variants.json]

Papers: POSO (Dai et al. 2021, Kuaishou) targets new users (personalization code: is_new and activity); UIE
(Liu et al. 2024, Tencent) targets users with sparse behaviour, with PLE as the main model.

Data: the shared simulated platform of ``_paper.py`` (8 days, 12,000 initial users, signups 3 % of them a day
so that new users are ~9 % of held-out impressions; simulator seed 2018), point-in-time ``ple_uie_v1``
features (``esmm_v1`` plus the recent-click sequence UIE reads). Days 2-5 train (~485k impressions), day 6
validates, days 7-8 (~240k impressions) are held out.

Models: PLE with 2 levels, 1 specific expert per task and 1 shared expert per level, experts of 256, towers of
64, embeddings of 16, CTR + CTCVR loss over every impression; POSO (one scalar gate per expert from the raw
personalization code log1p(views), is_new_user, log1p(days since signup)); UIE with its defaults (UPE + UCBE +
UCSE, 64 user and item centroids of 16, auxiliary weight 0.1, no warm start). Adam lr 1e-3, batch 1024. One
epoch by default: plain PLE's validation loss was lowest after the first epoch (0.4937, 0.4951, 0.4944 over
three), so early stopping would restore epoch 1 anyway, and one epoch keeps 12 trainings within ~15 minutes.
With ``--epochs`` > 1 the epoch of lowest validation loss is kept. Seeds change initial weights and shuffling.

Slices of the held-out days (``pipelines.evaluation.slices``): ``overall``; ``user=new`` (signed up less than
7 days before the impression); ``sparse_user`` = ``user_interactions < --sparse-below``, the user's
impressions logged up to the previous day (the ``view_count`` feature). 40 makes it ~23 % of held-out
impressions (new users and warm low-activity ones): a minority, near UIE's "over 30 % of users" (users, not
impressions). Sizes are printed.

Intervals: mean ± 95 % Student-t half-width over seeds, for each variant and for its paired per-seed
difference from plain PLE (``--bootstrap N`` adds a per-seed paired bootstrap of the difference; off by
default, as it costs ~20 s per variant and seed).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import _paper as paper

PLE = {"embed_dim": 16, "levels": 2, "specific_experts": 1, "shared_experts": 1, "expert": [256], "tower": [64]}
VARIANTS = {
    "ple": PLE,
    "ple+poso": {**PLE, "poso": True},
    "ple+uie": {**PLE, "uie": {}},
    "ple+uie+poso": {**PLE, "uie": {}, "poso": True},
}
SLICES = ("overall", "user=new", "sparse_user")
METRICS = ("auc", "gauc")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--days", type=int, default=paper.SIM_DEFAULTS["days"])
    parser.add_argument("--users", type=int, default=paper.SIM_DEFAULTS["users"])
    parser.add_argument("--sim-seed", type=int, default=paper.SIM_DEFAULTS["seed"])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--sparse-below", type=float, default=40, help="sparse_user: user_interactions below this.")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--bootstrap", type=int, default=0, help="Resamples of the per-seed paired bootstrap.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared).")
    parser.add_argument("--home", type=Path, help="Platform folder (default: benchmarks/.work/paper[-<config hash>]).")
    parser.add_argument("--out", type=Path, default=paper.RESULTS / "ple_variants.json")
    opts = parser.parse_args()
    if opts.variants[0] != "ple":
        parser.error("the first variant must be ple: the others are compared with it")
    return opts


def ctr(run: dict, variant: str, slice_name: str) -> dict:
    """The CTR report of one variant on one slice in one seed's run."""
    return run["slices"][variant][slice_name]["tasks"]["ctr"]


def summarize(runs: list[dict], variants: list[str]) -> dict:
    """variant -> slice -> metric -> {value, delta_vs_ple, delta_bootstrap} over seeds."""
    summary: dict = {}
    for name in variants:
        for slice_name in SLICES:
            for metric in METRICS:
                values = [ctr(r, name, slice_name)["candidate"][metric]["value"] for r in runs]
                base = [ctr(r, "ple", slice_name)["candidate"][metric]["value"] for r in runs]
                entry = {"value": paper.t_interval(values)}
                if name != "ple" and None not in values + base:
                    entry["delta_vs_ple"] = paper.t_interval([v - b for v, b in zip(values, base, strict=True)])
                    entry["delta_bootstrap"] = [ctr(r, name, slice_name)["delta"][metric] for r in runs]
                summary.setdefault(name, {}).setdefault(slice_name, {})[metric] = entry
    return summary


def table(summary: dict, runs: list[dict], variants: list[str], sizes: dict, test, test_days, sparse: str) -> list:
    lines = [
        f"PLE variants, {len(runs)} seeds, held-out days {test_days} ({len(test):,} impressions); CTR in points, "
        "mean ± 95 % t half-width over seeds; Δ = variant − PLE, paired by seed",
        "",
        f"sparse_user = {sparse}",
    ]
    for name, v in sizes.items():
        gauc_users = ctr(runs[0], "ple", name)["candidate"]["users_in_gauc"]
        lines.append(f"- {name}: {v['impressions']:,} impressions ({v['share']:.1%}), {v['users']:,} users, "
                     f"{v['clicks']:,} clicks; {gauc_users:,} users with both outcomes (GAUC)")  # fmt: skip
    for metric in METRICS:
        header = " | ".join(f"{s} | Δ {s}" for s in SLICES)
        lines += ["", f"| CTR {metric.upper()} | {header} |", "|---|" + "---:|" * (2 * len(SLICES))]
        for name in variants:
            cells = [name]
            for slice_name in SLICES:
                entry = summary[name][slice_name][metric]
                cells += [paper.fmt(entry["value"])]
                cells += [paper.fmt(entry["delta_vs_ple"], signed=True) if "delta_vs_ple" in entry else ""]
            lines.append("| " + " | ".join(cells) + " |")
    per_seed = []
    for name in variants[1:]:
        parts = [
            f"{slice_name} {text}"
            for slice_name in SLICES
            for d in summary[name][slice_name]["auc"].get("delta_bootstrap", [])
            if (text := paper.fmt_bootstrap(d))
        ]
        if parts:
            per_seed.append(f"- {name}: " + "; ".join(parts))
    if per_seed:
        lines += ["", "Per-seed paired bootstrap of variant − PLE, CTR AUC (points, 95 % interval):", "", *per_seed]
    entropy = {n: [r["training"][n]["uie_user_centroid_entropy"] for r in runs] for n in variants if "uie" in n}
    if entropy:
        values = "; ".join(f"{n} " + ", ".join(f"{e:.2f}" for e in v) for n, v in entropy.items())
        lines += ["", f"UIE user-centroid usage entropy / log N (1 = even use, 0 = collapse), per seed: {values}"]
    return lines


def main() -> None:
    opts = parse_args()
    paper.setup_logging()
    warnings.simplefilter("ignore", FutureWarning)  # dask, inside Feast's point-in-time join

    from pipelines.evaluation.api import EvaluationConfig
    from pipelines.evaluation.slices import SliceConfig, slice_masks

    start = time.perf_counter()
    sim = paper.sim_config(opts.days, opts.users, opts.sim_seed)
    platform = paper.build_platform(opts.home or paper.default_home(sim), sim)
    train_days, test_days = paper.windows(opts.days)
    train, val, test = paper.frames(platform, "ple_uie_v1", train_days, test_days)
    enc = paper.encode(train, val, test)
    prepared = time.perf_counter() - start
    slice_cfg = SliceConfig(cross=False, custom={"sparse_user": f"user_interactions < {opts.sparse_below:g}"})
    cfg = EvaluationConfig(n_bootstrap=opts.bootstrap, slices=slice_cfg, tasks=("ctr",))
    masks = slice_masks(test, slice_cfg)
    sizes = {
        name: {
            "impressions": int(masks[name].sum()),
            "share": float(masks[name].mean()),
            "users": int(test.loc[masks[name], "user_id"].nunique()),
            "clicks": int(test.loc[masks[name], "click"].sum()),
        }
        for name in SLICES
    }
    runs = []
    for seed in opts.seeds:
        preds, facts, seed_slices = {}, {}, {}
        for name in opts.variants:
            preds[name], facts[name] = paper.train_and_predict(
                "ple", VARIANTS[name], enc, opts.epochs, seed, opts.threads
            )
            scores = {"candidate": preds[name]} | ({"champion": preds["ple"]} if name != "ple" else {})
            seed_slices[name] = paper.score(test, scores, cfg, SLICES)
            auc = seed_slices[name]["overall"]["tasks"]["ctr"]["candidate"]["auc"]["value"]
            paper.log.info("seed %d %s: %d epochs in %.0f s, overall CTR AUC %.4f", seed, name,
                           facts[name]["epochs_run"], facts[name]["train_seconds"], auc)  # fmt: skip
        runs.append({"seed": seed, "training": facts, "slices": seed_slices})
    summary = summarize(runs, opts.variants)
    wall = time.perf_counter() - start
    lines = table(summary, runs, opts.variants, sizes, test, test_days, slice_cfg.custom["sparse_user"])
    lines += ["", f"wall {wall:.0f} s (platform and frames {prepared:.0f} s)"]
    print("\n".join(lines))
    paper.write_json(
        opts.out,
        {
            "benchmark": "ple_variants",
            "simulator": sim,
            "train_days": train_days,
            "test_days": test_days,
            "rows": {"train": len(train), "val": len(val), "test": len(test)},
            "slices": sizes,
            "slice_config": slice_cfg.model_dump(mode="json"),
            "variants": {n: VARIANTS[n] for n in opts.variants},
            "epochs": opts.epochs,
            "seeds": opts.seeds,
            "summary": summary,
            "runs": runs,
            "table": lines,
            "wall_seconds": wall,
            "prepare_seconds": prepared,
            "machine": paper.machine(),
        },
    )


if __name__ == "__main__":
    main()
