"""A/B readout time and peak memory over 30 days of 1M and 10M impressions per day.

    .venv/bin/python benchmarks/ab_readout.py [--repeat 3] [--cases 30x1M,30x10M] [--keep DIR]

The logs are simulated once per case (user split with the new-item boost) into a temporary COLDSTART_HOME;
then `coldstart ab` reads the raw layer (validating 300M rows first would take longer than the readout itself)
`--repeat` times, each in a fresh process; peak RSS is that process's own. DuckDB's memory limit is the
readout's default (3 GB); above it DuckDB spills to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from _proc import timed

BIN = Path(sys.executable).parent
CASES = {
    "30x1M": ["--days", "30", "--users", "100000", "--impressions-per-day", "1000000"],
    "30x10M": ["--days", "30", "--users", "1000000", "--impressions-per-day", "10000000"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", default="30x1M,30x10M")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ab_readout.json")
    opts = parser.parse_args()
    results = {}
    for name in opts.cases.split(","):
        home = Path(tempfile.mkdtemp(prefix="abbench-"))
        try:
            env = {**os.environ, "COLDSTART_HOME": str(home)}
            sim_s, sim_rss = timed([str(BIN / "coldstart"), "simulate", *CASES[name]], env)
            cmd = [str(BIN / "coldstart"), "ab", "--start", "2026-01-01", "--end", "2026-01-30", "--layer", "raw"]
            runs = [timed(cmd, env) for _ in range(opts.repeat)]
            size = sum(p.stat().st_size for p in (home / "data" / "sim" / "raw" / "impressions").rglob("*.parquet"))
        finally:
            shutil.rmtree(home, ignore_errors=True)
        results[name] = {
            "simulate_s": sim_s,
            "impressions_parquet_gb": size / 2**30,
            "readout_s": statistics.median(r[0] for r in runs),
            "peak_rss_mb": statistics.median(r[1] for r in runs),
            "runs": runs,
        }
        print(name, json.dumps(results[name]), flush=True)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
