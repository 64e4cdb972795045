"""A/A error rates of the cold-start readout: per-test false positives before correction, family-wise after.

    .venv/bin/python benchmarks/ab_aa.py [--seeds 100] [--relabels 20] [--days 6] [--users 3000]

Each seed simulates a user split whose arms run the same policy (``treatment_policy = policy = popularity``),
so any significant lift is a false positive. The readout runs end to end (DuckDB sums, delta method, Holm over
the window family) on the last ``days - pre_days`` days, once plain and once with CUPED on the first
``pre_days`` days. Within each seed the units are also relabelled at random ``--relabels`` times (each one more
A/A through the same statistics), which gives many more families for the family-wise rate. Seeds start at 1000
(the tests use 11 and 100-105). Intervals are Wilson 95% (``scipy.stats.binomtest``). Targets: 3-7% per test at
alpha 0.05 before correction, at most 5% family-wise after.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from pipelines.data.contract import Store
from pipelines.data.simulator import Simulator, SimulatorConfig
from pipelines.experiments.aa import false_positive_rates, relabelled
from pipelines.experiments.config import ReadoutConfig
from pipelines.experiments.readout import readout, unit_sums

# Thresholds scaled to a 3000-user simulation so that every metric has data to test.
THRESHOLDS = dict(layer="raw", high_exposure_threshold=30, exposure_target=20, hot_clicks=5, hot_days=2)


def one_seed(seed: int, opts: argparse.Namespace, root: Path) -> dict:
    """Simulate one A/A run; p-values of the readout (plain, CUPED) and of relabelled units (plain, CUPED)."""
    sim = SimulatorConfig(seed=seed, days=opts.days, users=opts.users, design="user_split",
                          policy="popularity", treatment_policy="popularity")  # fmt: skip
    store = Store(root, "sim")
    Simulator(sim, store).run()
    start = sim.start_date + dt.timedelta(days=opts.pre_days)
    plain_cfg = ReadoutConfig(**THRESHOLDS)
    cuped_cfg = ReadoutConfig(**THRESHOLDS, cuped_pre_days=opts.pre_days)
    out = {}
    for label, cfg in (("plain", plain_cfg), ("cuped", cuped_cfg)):
        result = readout(store, start, sim.end_date, cfg, bootstrap_metrics=())
        out[f"readout_{label}"] = [m["p_value"] for m in result["metrics"].values()]
    if opts.relabels:
        units = unit_sums(store, start, sim.end_date, cuped_cfg)
        for label, cuped in (("plain", False), ("cuped", True)):
            _, rel = relabelled(units, opts.relabels, seed=seed, cuped=cuped,
                                permutation_below_units=plain_cfg.permutation_below_units)  # fmt: skip
            out[f"relabelled_{label}"] = rel["p_value"].tolist()
    out["metrics"] = list(result["metrics"])
    return out


def summarise(p_values: np.ndarray) -> dict:
    rates = false_positive_rates(p_values)
    return {k: r.to_dict() for k, r in rates.items()}


def _line(name: str, summary: dict) -> str:
    per, raw, holm = summary["per_test"], summary["familywise_uncorrected"], summary["familywise_corrected"]
    return (
        f"{name:22s} per test {per['share']:6.2%} [{per['low']:.2%}, {per['high']:.2%}] ({per['k']}/{per['n']})   "
        f"any, uncorrected {raw['share']:6.2%}   any after Holm {holm['share']:6.2%} "
        f"[{holm['low']:.2%}, {holm['high']:.2%}] ({holm['k']}/{holm['n']})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--relabels", type=int, default=20)
    parser.add_argument("--days", type=int, default=6)
    parser.add_argument("--pre-days", type=int, default=2)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ab_aa.json")
    opts = parser.parse_args()
    started = time.perf_counter()
    runs = []
    for seed in range(opts.first_seed, opts.first_seed + opts.seeds):
        root = Path(tempfile.mkdtemp(prefix="ab-aa-"))
        try:
            runs.append(one_seed(seed, opts, root))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    results = {"args": {k: str(v) for k, v in vars(opts).items()}, "metrics": runs[0]["metrics"], "rates": {}}
    window = opts.days - opts.pre_days
    n_metrics = len(runs[0]["metrics"])
    print(f"A/A over {opts.seeds} seeds ({opts.days} days, {opts.users} users, window = last {window} days), "
          f"alpha 0.05, {n_metrics} metrics; Wilson 95% intervals")  # fmt: skip
    kinds = ("readout_plain", "readout_cuped") + (("relabelled_plain", "relabelled_cuped") if opts.relabels else ())
    for kind in kinds:
        rows = [r[kind] for r in runs]
        p = np.asarray(rows, float) if kind.startswith("readout") else np.vstack([np.asarray(r, float) for r in rows])
        results["rates"][kind] = summarise(p)
        print(_line(kind, results["rates"][kind]))
    results["readout_p_values"] = {k: [r[k] for r in runs] for k in ("readout_plain", "readout_cuped")}
    results["seconds"] = time.perf_counter() - started
    print(f"{results['seconds']:.0f} s")
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
