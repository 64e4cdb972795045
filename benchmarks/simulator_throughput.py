"""Simulator throughput (impressions/s) and peak memory at 1M and 10M impressions.

Each case runs `coldstart simulate` in a fresh process (so peak RSS is that run's own) into a temporary
COLDSTART_HOME, `--repeat` times; the table shows medians. Run it with:

    .venv/bin/python benchmarks/simulator_throughput.py [--repeat 3] [--cases 1M,10M,default]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from _proc import run

COLDSTART = str(Path(sys.executable).parent / "coldstart")
CASES = {
    # name: (simulate arguments, expected impressions)
    "1M": (["--days", "1", "--users", "100000", "--impressions-per-day", "1000000"], 1_000_000),
    "10M": (["--days", "1", "--users", "1000000", "--impressions-per-day", "10000000"], 10_000_000),
    "default": (["--days", "14", "--users", "20000"], None),
}


def run_once(args: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="simbench-") as home:
        env = {**os.environ, "COLDSTART_HOME": home}
        wall, peak_rss_mb, stdout = run([COLDSTART, "simulate", *args], env)
        impressions = next(int(line.split("│")[2].strip()) for line in stdout.splitlines() if "│ impressions " in line)
        size = sum(p.stat().st_size for p in Path(home).rglob("*.parquet"))
    return {
        "wall_s": wall,
        "impressions": impressions,
        "impressions_per_s": impressions / wall,
        "peak_rss_mb": peak_rss_mb,
        "bytes_on_disk": size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", default="1M,10M,default")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "simulator_throughput.json")
    opts = parser.parse_args()
    results = {}
    for name in opts.cases.split(","):
        args, _ = CASES[name]
        runs = [run_once(args) for _ in range(opts.repeat)]
        results[name] = {
            "args": args,
            "runs": runs,
            **{k: statistics.median(r[k] for r in runs) for k in ("wall_s", "impressions_per_s", "peak_rss_mb")},
            "impressions": runs[0]["impressions"],
            "bytes_on_disk": runs[0]["bytes_on_disk"],
        }
    meta = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"| case | impressions | wall s (median of {opts.repeat}) | impressions/s | peak RSS MB | parquet MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {name} | {r['impressions']:,} | {r['wall_s']:.1f} | {r['impressions_per_s']:,.0f} "
            f"| {r['peak_rss_mb']:,.0f} | {r['bytes_on_disk'] / 2**20:,.0f} |"
        )


if __name__ == "__main__":
    main()
