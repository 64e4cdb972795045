"""validate_logs throughput (rows/s) and peak memory on a day of 1M and 10M impressions.

For each case one simulated day is written once into a temporary COLDSTART_HOME, then
`coldstart validate --date` runs `--repeat` times, each in a fresh process (peak RSS is that run's own). The
day also carries that day's users, items, publishes and assignments, which are validated too; rows/s counts
all of them. Run with:

    .venv/bin/python benchmarks/validation_throughput.py [--repeat 3] [--cases 1M,10M]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _proc import timed

BIN = Path(sys.executable).parent
CASES = {
    "1M": ["--days", "1", "--users", "100000", "--impressions-per-day", "1000000"],
    "10M": ["--days", "1", "--users", "1000000", "--impressions-per-day", "10000000"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", default="1M,10M")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "validation_throughput.json")
    opts = parser.parse_args()
    results = {}
    for name in opts.cases.split(","):
        with tempfile.TemporaryDirectory(prefix="valbench-") as home:
            env = {**os.environ, "COLDSTART_HOME": home}
            subprocess.run([BIN / "coldstart", "simulate", *CASES[name]], env=env, check=True, capture_output=True)
            runs = [
                timed([str(BIN / "coldstart"), "validate", "--date", "2026-01-01"], env) for _ in range(opts.repeat)
            ]
            summary = json.loads((Path(home) / "reports/validation/sim/2026-01-01.json").read_text())
        wall = statistics.median(r[0] for r in runs)
        results[name] = {
            "rows": summary["rows_in"],
            "impressions": summary["tables"]["impressions"]["rows_in"],
            "wall_s": wall,
            "rows_per_s": summary["rows_in"] / wall,
            "peak_rss_mb": statistics.median(r[1] for r in runs),
            "per_table_s": {t: round(r["seconds"], 2) for t, r in summary["tables"].items()},
            "runs": runs,
        }
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(results, indent=2))
    print(
        f"| case | rows (impressions) | wall s (median of {opts.repeat}) | rows/s | peak RSS MB | seconds per table |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for name, r in results.items():
        tables = ", ".join(f"{t} {s}" for t, s in r["per_table_s"].items())
        print(
            f"| {name} | {r['rows']:,} ({r['impressions']:,}) | {r['wall_s']:.1f} | {r['rows_per_s']:,.0f} "
            f"| {r['peak_rss_mb']:,.0f} | {tables} |"
        )


if __name__ == "__main__":
    main()
