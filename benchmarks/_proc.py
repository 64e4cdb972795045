"""Shared by the benchmarks: run a command in a fresh process and measure it."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time


def run(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """Run ``cmd``; return (wall seconds, that process's peak RSS in MB, its output).

    Output goes to a temporary file rather than a pipe, so a chatty command cannot block before ``wait4``
    collects its resource usage. Raises with the output's tail on failure.
    """
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        text = out.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(text[-3000:])
    return wall, usage.ru_maxrss / 1024, text


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of ``cmd``."""
    wall, rss, _ = run(cmd, env)
    return wall, rss
