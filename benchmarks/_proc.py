"""Shared by the benchmarks: run a command in a fresh process and measure it."""

from __future__ import annotations

import os
import subprocess
import time


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, peak RSS MB of that process). Raises with its stderr on failure."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(proc.stderr.read().decode()[-3000:])
    return time.perf_counter() - start, usage.ru_maxrss / 1024
