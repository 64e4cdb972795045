"""The offline paths the chain spends its time in: DuckDB against what Feast and sklearn do, side by side.

    .venv/bin/python benchmarks/offline_joins.py [--impressions 1000000] [--repeat 3] [--home DIR]

On one simulated week (``--impressions`` over 7 days, 10 impressions per user a day, seed 7; validated and
featurized with ``coldstart validate`` / ``coldstart features`` into ``--home``, default
``benchmarks/.work/offline-<N>``, reused when it already holds the data), each case in a fresh process (wall time
and that process's peak RSS):

1. the PLE training set (feature service ``ple_uie_v1``, days 1-6): ``build_training_set`` (DuckDB ASOF joins)
   against ``feast_training_set`` (Feast's ``get_historical_features``, file/Dask offline store);
2. materializing the whole week into the SQLite online store: ``materialize_day(engine="duckdb")`` against
   ``engine="feast"`` (``FeatureStore.materialize``);
3. the evaluation report's bootstrap (50 paired resamples of AUC, logloss and calibration, two score vectors, on
   day 7's impressions): ``binary_report`` (``WeightedRows``) against scipy's paired bootstrap calling sklearn on
   every resample (the previous implementation).

Feast's join and materialization run once (they take minutes); the others ``--repeat`` times, median reported.
Results: ``benchmarks/results/offline_joins_<N>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from _proc import run

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent

PRELUDE = """
import datetime as dt, time
from pipelines.settings import get_settings
from pipelines.data.contract import Store
from pipelines.features.compute import FeatureLayout
from pipelines.features.store import get_store
s = get_settings(); data = Store(s.data_dir, "sim"); store = get_store(s, "sim")
layout = FeatureLayout.for_dataset(s.home, "sim")
days = data.partitions("impressions", "clean")
"""

CASES = {
    "training set, DuckDB": """
from pipelines.features.training_set import build_training_set
t = time.perf_counter(); f = build_training_set(store, data, days[0], days[-2], "ple_uie_v1")
print("RESULT", time.perf_counter() - t, len(f))
""",
    "training set, Feast get_historical_features": """
from pipelines.features.training_set import feast_training_set
t = time.perf_counter(); f = feast_training_set(store, data, days[0], days[-2], "ple_uie_v1")
print("RESULT", time.perf_counter() - t, len(f))
""",
    "materialize the week, DuckDB": """
from pipelines.features.store import materialize_day
t = time.perf_counter(); materialize_day(store, layout, days[0], engine="duckdb")
print("RESULT", time.perf_counter() - t, 0)
""",
    "materialize the week, Feast materialize": """
from pipelines.features.store import materialize_day
t = time.perf_counter(); materialize_day(store, layout, days[0], engine="feast")
print("RESULT", time.perf_counter() - t, 0)
""",
    "bootstrap, WeightedRows": """
import numpy as np
from pipelines.evaluation.metrics import binary_report
imps = data.read_range("impressions", days[-1], days[-1], "clean", ["user_id", "click"]).to_pandas()
rng = np.random.default_rng(0); y = imps["click"].to_numpy()
a, b = np.clip(0.2 * y + rng.random(len(y)) * 0.8, 0, 1), rng.random(len(y))
t = time.perf_counter(); binary_report(y, {"candidate": a, "champion": b}, imps["user_id"].to_numpy(), 50)
print("RESULT", time.perf_counter() - t, len(y))
""",
    "bootstrap, sklearn on every resample": """
import numpy as np, warnings
from scipy.stats import bootstrap
from sklearn.metrics import log_loss, roc_auc_score
from pipelines.evaluation.metrics import EPS
def _point(yy, pp):
    return [roc_auc_score(yy, pp), log_loss(yy, np.clip(pp, EPS, 1 - EPS), labels=[0, 1]), pp.mean() / yy.mean()]
imps = data.read_range("impressions", days[-1], days[-1], "clean", ["user_id", "click"]).to_pandas()
rng = np.random.default_rng(0); y = imps["click"].to_numpy()
a, b = np.clip(0.2 * y + rng.random(len(y)) * 0.8, 0, 1), rng.random(len(y))
def statistic(yy, aa, bb):
    pa, pb = _point(yy, aa), _point(yy, bb)
    return np.array(pa + pb + [x - z for x, z in zip(pa, pb)])
t = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    bootstrap((y, a, b), statistic, paired=True, vectorized=False, n_resamples=50, method="percentile", random_state=0)
print("RESULT", time.perf_counter() - t, len(y))
""",
}
ONCE = {"training set, Feast get_historical_features", "materialize the week, Feast materialize"}


def prepare(home: Path, impressions: int, env: dict) -> None:
    if (home / "features" / "sim" / "user_profile").is_dir():
        return
    users = max(impressions // 70, 1000)
    coldstart = str(BIN / "coldstart")
    steps = [
        ["simulate", "--days", "7", "--users", str(users), "--impressions-per-day", str(impressions // 7),
         "--seed", "7", "--start-date", "2026-01-01"],
        ["validate"],
        ["features"],
    ]  # fmt: skip
    for step in steps:
        wall, _, _ = run([coldstart, *step], env)
        print(f"prepare: coldstart {step[0]} {wall:.1f} s", flush=True)


def prepared_home(impressions: int, home: Path | None) -> tuple[Path, dict]:
    """The week's home (``home``, default ``.work/offline-<N>``), prepared, and the environment pointing at it."""
    home = (home or HERE / ".work" / f"offline-{impressions}").resolve()
    env = {**os.environ, "COLDSTART_HOME": str(home), "COLDSTART_PROFILE": "local"}
    prepare(home, impressions, env)
    return home, env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impressions", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--home", type=Path)
    args = parser.parse_args()
    home, env = prepared_home(args.impressions, args.home)
    results = {}
    for name, code in CASES.items():
        runs = []
        for _ in range(1 if name in ONCE else args.repeat):
            wall, rss, out = run([sys.executable, "-c", PRELUDE + code], env)
            line = next(x for x in out.splitlines() if x.startswith("RESULT"))
            _, seconds, rows = line.split()
            runs.append({"seconds": float(seconds), "process_wall_s": wall, "peak_rss_mb": rss, "rows": int(rows)})
            print(f"{name}: {float(seconds):.1f} s, peak RSS {rss:,.0f} MB", flush=True)
        results[name] = {
            "runs": runs,
            "median_s": statistics.median(r["seconds"] for r in runs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "rows": runs[0]["rows"],
        }
    out = HERE / "results" / f"offline_joins_{args.impressions}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"impressions": args.impressions, "home": str(home), "results": results}, indent=2))
    print("\n| case | rows | runs | median s | peak RSS MB |\n|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['rows']:,} | {len(r['runs'])} | {r['median_s']:.1f} | {r['peak_rss_mb']:,.0f} |")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
