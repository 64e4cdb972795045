"""The whole platform end to end under the real Airflow scheduler: wall time per stage and peak memory.

Run it with (one case per ``--impressions``; the real cases are 1M and 10M impressions):

    .venv/bin/python benchmarks/platform_e2e.py --impressions 1000000 --impressions 10000000

Per case, in a fresh ``COLDSTART_HOME`` under ``benchmarks/.work/e2e-<N>/home`` (deleted first):

1. ``coldstart simulate`` in its own process: ``--days D`` (default 7), N / (10 x D) users (at least 5,000: the
   simulator's default density, about 10 impressions per user a day; ``--per-user-day``),
   ``--impressions-per-day N // D``, seed 7, from 2026-01-01.
2. ``coldstart platform up`` on free ports (local profile unless ``COLDSTART_PROFILE`` says otherwise), until
   healthy and every DAG is parsed ("platform start-up").
3. ``validate_logs`` over every day with a ``chain`` conf (default: train ESMM and PLE for one epoch at batch
   4096, 50 bootstrap resamples in evaluation; ``--chain JSON`` replaces it), followed through the Assets until
   ``materialize_features -> train_models -> evaluate_models -> promote_bento`` are done and the chain is quiet;
   then ``coldstart_ab_metrics`` over the same days.

What is measured:

* the chain end to end, from the trigger to the last run's ``end_date`` (REST), and as this script saw it
  (trigger -> the chain quiet for three polls: a few seconds more); then the same with the A/B readout;
* per DAG: its runs' wall time (``end_date - start_date``; evaluation and promotion run once per trained model),
  the sum of its task instances' ``duration`` (every try, when a task was retried), and its share of the chain's
  wall time. Stages overlap (PLE trains while ESMM is evaluated), so the shares can add up to more than 100 %;
  the time during which no DAG run was running is reported as scheduling gaps;
* memory: every 0.5 s the summed RSS of every platform process (api-server, scheduler, dag-processor,
  triggerer, MLflow) and all their descendants (LocalExecutor workers and the task processes they fork, the
  ``bentoml serve`` a promotion starts), and the largest single process. Peaks over the chain, and per stage
  over the samples inside that DAG's run windows (overlapping stages share samples). Summed RSS counts pages that
  forked processes share once per process, so it overstates the memory actually in use; it is what a container
  limit would not see, but a fair upper bound. Per task, the peak RSS of its process and its children
  (``pid`` of the task instance; the last try only).

Results go to ``benchmarks/results/platform_e2e_<N>.json`` (with every sample, the exact conf, machine info);
with ``--repeat`` > 1 every repeat is a fresh case and the table shows medians. The platform is always stopped
(``platform down``), also on failure or Ctrl-C; a failed run exits non-zero with the failed tasks' exceptions and
log tails, and what was measured up to it still goes to the JSON. A promotion gate that blocks a candidate is a
failed run: with no champion yet the gate's absolute floors apply (AUC 0.55), which a one-epoch model on a small
case can miss; pass lower floors for such a case, e.g. ``--chain '{"train_models": {"models": ["esmm", "ple"],
"epochs": 1, "batch_size": 4096}, "evaluate_models": {"n_bootstrap": 50, "floors": {"ctr:auc": 0, "ctcvr:auc": 0}}}'``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
from _proc import run
from airflow_client.client.exceptions import ApiException

from pipelines.platform.client import CHAIN, AirflowClient, ChainError, now
from pipelines.platform.launcher import ADMIN_USER, admin_password, airflow_url, down, read_state, up
from pipelines.serving.bento import free_port
from pipelines.settings import Settings, get_settings

HERE = Path(__file__).resolve().parent
COLDSTART = str(Path(sys.executable).parent / "coldstart")
FIRST_DAY = dt.date(2026, 1, 1)
SEED = 7
AB_DAG = "coldstart_ab_metrics"
DEFAULT_CHAIN: dict[str, dict[str, Any]] = {
    "train_models": {"models": ["esmm", "ple"], "epochs": 1, "batch_size": 4096, "lr": 0.003},
    "evaluate_models": {"n_bootstrap": 50},
}
SAMPLE_EVERY_S = 0.5
FOLLOW_SLICE_S = 60  # follow the chain in slices, so that a failed run is reported within a minute
MB = 2**20
TASK_TITLE = "airflow worker -- "


# ---- memory sampler -------------------------------------------------------------------------------------------


Key = tuple[int, int]  # (pid, start time in clock ticks since boot): a process, even if its pid is reused


@dataclass
class ProcessPeak:
    """The peak RSS of one process (and of it plus its descendants) over the samples that saw it."""

    pid: int
    label: str
    first_seen: float
    last_seen: float
    rss_mb: float = 0.0
    tree_mb: float = 0.0


@dataclass
class Sample:
    t: float  # epoch seconds
    total_mb: float
    largest_mb: float
    largest: Key  # the largest process
    processes: int


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time) of every process, from ``/proc/<pid>/stat`` (one cheap pass; psutil's
    ``children(recursive=True)`` makes the same pass once per root)."""
    out = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat:
                    text = stat.read()
            except OSError:  # gone since the listing
                continue
            fields = text[text.rindex(b")") + 2 :].split()  # after the command name: state, ppid, ...
            out[int(entry.name)] = (int(fields[1]), int(fields[19]))
    return out


@dataclass
class RssSampler:
    """Samples the platform's process trees every ``interval`` seconds in a background thread."""

    settings: Settings
    interval: float = SAMPLE_EVERY_S
    samples: list[Sample] = field(default_factory=list)
    peaks: dict[Key, ProcessPeak] = field(default_factory=dict)
    cpu_s: float = 0.0  # the sampler thread's own CPU time
    errors: int = 0  # samples lost to an unexpected error
    task_names: dict[str, str] = field(default_factory=dict)  # task instance id -> "dag.task[map index]"
    _roots: list[int] = field(default_factory=list)
    _roots_read: float = 0.0
    _processes: dict[Key, psutil.Process] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RssSampler:
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sample()
            except Exception:  # a sampling hiccup must never end the benchmark
                self.errors += 1
            self.cpu_s = time.thread_time()
            self._stop.wait(self.interval)

    def _read_roots(self) -> None:
        """The recorded components (re-read every 5 s: ``up`` writes the state once every process started)."""
        roots = []
        for entry in read_state(self.settings)["components"].values():
            with contextlib.suppress(psutil.Error):
                if abs(psutil.Process(entry["pid"]).create_time() - entry["started"]) <= 1:
                    roots.append(entry["pid"])
        self._roots, self._roots_read = roots, time.monotonic()

    def _sample(self) -> None:
        if not self._roots or time.monotonic() - self._roots_read > 5:
            self._read_roots()
        t = time.time()
        table = _process_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        pids, queue = set(), [pid for pid in self._roots if pid in table]
        while queue:  # the roots and all their descendants
            pid = queue.pop()
            if pid not in pids:
                pids.add(pid)
                queue += children.get(pid, [])
        rss: dict[int, float] = {}
        keys: dict[int, Key] = {}
        for pid in pids:
            key = (pid, table[pid][1])
            try:
                process = self._processes.get(key) or psutil.Process(pid)
                rss[pid] = process.memory_info().rss / MB
            except psutil.Error:  # exited since the pass over /proc
                continue
            self._processes[key], keys[pid] = process, key
            peak = self.peaks.get(key)
            if peak is None:
                peak = self.peaks[key] = ProcessPeak(pid, _label(process), t, t)
            elif rss[pid] > 1.1 * peak.rss_mb:
                peak.label = _label(process)  # task processes retitle themselves after the fork
            peak.last_seen, peak.rss_mb = t, max(peak.rss_mb, rss[pid])
        if not rss:
            return
        for key in set(self._processes) - set(keys.values()):
            del self._processes[key]
        tree = dict(rss)  # each process plus its descendants
        for pid, mb in rss.items():
            ancestor = table[pid][0]
            for _ in range(64):  # up to a root: its parent is not sampled
                if ancestor not in tree:
                    break
                tree[ancestor] += mb
                ancestor = table[ancestor][0]
        for pid, mb in tree.items():
            self.peaks[keys[pid]].tree_mb = max(self.peaks[keys[pid]].tree_mb, mb)
        largest = max(rss, key=rss.__getitem__)
        self.samples.append(Sample(t, sum(rss.values()), rss[largest], keys[largest], len(rss)))

    def name(self, key: Key) -> str:
        """A process's command line, or the task it ran: LocalExecutor titles a task process ``airflow worker --
        <task instance id>``."""
        label = self.peaks[key].label
        if label.startswith(TASK_TITLE):
            return self.task_names.get(label.removeprefix(TASK_TITLE).strip(), label)
        return label

    def peak(self, windows: list[tuple[float, float]]) -> dict[str, Any]:
        """Peak summed and single-process RSS over the samples inside any of ``windows`` (epoch seconds)."""
        inside = [s for s in self.samples if any(a <= s.t <= b for a, b in windows)]
        if not inside:
            return {"peak_rss_mb": None, "peak_process_mb": None, "peak_process": None, "samples": 0}
        top = max(inside, key=lambda s: s.largest_mb)
        return {
            "peak_rss_mb": round(max(s.total_mb for s in inside), 1),
            "peak_process_mb": round(top.largest_mb, 1),
            "peak_process": self.name(top.largest),
            "samples": len(inside),
        }


def _label(process: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return " ".join(process.cmdline()).strip()[:160] or process.name()
    return "?"


# ---- one case -------------------------------------------------------------------------------------------------


def _ts(value: str | None) -> float | None:
    return dt.datetime.fromisoformat(value).timestamp() if value else None


def _union(windows: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one window."""
    total, end = 0.0, -float("inf")
    for a, b in sorted(windows):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """``values`` in os.environ (inherited by the simulator and every platform process), restored after."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _follow_chain(client: AirflowClient, since: dt.datetime, timeout: float) -> dict[str, list[dict]]:
    """``client.follow`` over the whole chain, in slices: fails as soon as a run failed rather than at ``timeout``
    (a failed run stops the chain, and ``follow`` would wait for the DAGs after it until the timeout)."""
    deadline, transport_errors = time.monotonic() + timeout, 0
    while True:
        left = deadline - time.monotonic()
        try:
            try:
                runs, quiet = client.follow(CHAIN, since, expect=CHAIN, timeout=max(min(FOLLOW_SLICE_S, left), 1)), True
            except ChainError:
                if time.monotonic() >= deadline:
                    raise
                runs, quiet = {dag: client.runs_since(dag, since) for dag in CHAIN}, False
        except (ChainError, ApiException):  # the api-server can be slow to answer on a loaded machine: a few are fine
            transport_errors += 1
            if transport_errors > 10 or time.monotonic() >= deadline:
                raise
            continue
        _raise_on_failure(client, [r for rs in runs.values() for r in rs])
        if quiet:
            return runs


class CaseFailed(RuntimeError):
    """A case did not complete; ``partial`` holds what was measured up to the failure."""

    def __init__(self, message: str, partial: dict[str, Any]) -> None:
        super().__init__(message)
        self.partial = partial


def _raise_on_failure(client: AirflowClient, runs: list[dict]) -> None:
    failed = [r for r in runs if r["state"] not in ("success", "queued", "running")]
    if failed:
        raise ChainError("\n\n".join(_failure(client, r) for r in failed))


def _failure(client: AirflowClient, run_: dict) -> str:
    """``client.failure`` plus each failed task's exception: Airflow 3 logs it as a structured ``error_detail``,
    which the plain-text log tail that ``failure`` shows leaves out."""
    lines = [client.failure(run_)]
    for ti in client.task_instances(run_["dag_id"], run_["dag_run_id"]):
        if ti["state"] != "failed":
            continue
        path = (
            f"/dags/{ti['dag_id']}/dagRuns/{quote(ti['dag_run_id'], safe='')}/taskInstances/{ti['task_id']}"
            f"/logs/{max(ti['try_number'], 1)}"
        )
        with contextlib.suppress(ApiException, ChainError):
            content = client.call("GET", path, map_index=ti["map_index"], full_content="true").get("content")
            for message in content if isinstance(content, list) else []:
                for error in (message.get("error_detail") or []) if isinstance(message, dict) else []:
                    what = f"{error.get('exc_type')}: {error.get('exc_value')}"
                    lines.append(f"  {ti['task_id']}[{ti['map_index']}]: {what}")
    return "\n".join(lines)


def _tasks(client: AirflowClient, run_: dict) -> list[dict]:
    """The task instances of a run: duration of the last try and of every try, state, pid, window."""
    out = []
    for ti in client.task_instances(run_["dag_id"], run_["dag_run_id"]):
        durations = [ti["duration"]]
        if ti["try_number"] > 1:
            with contextlib.suppress(ApiException, ChainError):
                run_id = quote(ti["dag_run_id"], safe="")
                path = f"/dags/{ti['dag_id']}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/tries"
                tries = client.call("GET", path, map_index=ti["map_index"])["task_instances"]
                durations = [t["duration"] for t in tries]
        label = _task_label(ti)
        out.append(
            {
                "task": label,
                "id": ti["id"],
                "state": ti["state"],
                "try_number": ti["try_number"],
                "pid": ti["pid"],
                "duration_s": ti["duration"],
                "duration_all_tries_s": sum(d or 0.0 for d in durations),
                "start": ti["start_date"],
                "end": ti["end_date"],
                "queued": ti.get("queued_when"),
            }
        )
    return out


def _task_label(ti: dict) -> str:
    """``task_id``, with ``[map index]`` for a mapped task."""
    return ti["task_id"] + (f"[{ti.get('rendered_map_index') or ti['map_index']}]" if ti["map_index"] >= 0 else "")


def _name_task_processes(sampler: RssSampler, client: AirflowClient, runs: list[dict]) -> None:
    """Let the sampler name task processes after their tasks (``dag.task[map index]``)."""
    for run_ in runs:
        for ti in client.task_instances(run_["dag_id"], run_["dag_run_id"]):
            sampler.task_names[ti["id"]] = f"{ti['dag_id']}.{_task_label(ti)}"


def _task_peak(sampler: RssSampler, task: dict) -> float | None:
    """Peak RSS of a task's process and its children: the process titled with the task instance's id, else the one
    with its pid seen inside its window (the last try)."""
    found = [p.tree_mb for p in sampler.peaks.values() if p.label == TASK_TITLE + task["id"]]
    start, end = _ts(task["start"]), _ts(task["end"]) or time.time()
    if found or not task["pid"] or start is None:
        return round(max(found), 1) if found else None
    found = [
        p.tree_mb
        for p in sampler.peaks.values()
        if p.pid == task["pid"] and p.first_seen <= end + 1 and p.last_seen >= start - 1
    ]
    return round(max(found), 1) if found else None


def _stage(sampler: RssSampler, client: AirflowClient, dag_runs: list[dict], span_s: float | None) -> dict:
    windows = [(_ts(r["start_date"]), _ts(r["end_date"])) for r in dag_runs if r["start_date"] and r["end_date"]]
    tasks = [t | {"run": n} for n, r in enumerate(dag_runs, 1) for t in _tasks(client, r)]
    for task in tasks:
        task["peak_rss_mb"] = _task_peak(sampler, task)
    wall = sum(b - a for a, b in windows)
    if not windows:  # nothing finished (a partial result after a failure)
        return {"runs": len(dag_runs), "states": [r["state"] for r in dag_runs], "tasks": tasks}
    return {
        "runs": len(dag_runs),
        "run_ids": [r["dag_run_id"] for r in dag_runs],
        "run_types": [r["run_type"] for r in dag_runs],
        "states": [r["state"] for r in dag_runs],
        "wall_s": round(wall, 2),
        "first_start_to_last_end_s": round(max(b for _, b in windows) - min(a for a, _ in windows), 2),
        "queued_to_start_s": [
            round(_ts(r["start_date"]) - _ts(r["queued_at"]), 2)
            for r in dag_runs
            if r.get("queued_at") and r["start_date"]
        ],
        "task_s": round(sum(t["duration_all_tries_s"] for t in tasks), 2),
        "share": round(wall / span_s, 4) if span_s else None,
        "windows": windows,
        "tasks": tasks,
        **sampler.peak(windows),
    }


def run_case(
    impressions: int, days: int, chain: dict, timeout: float, keep: bool, per_user_day: int = 10
) -> dict[str, Any]:
    """Simulate, start the platform, run the chain and the A/B readout, measure; always stop the platform."""
    work = HERE / ".work" / f"e2e-{impressions}"
    home = work / "home"
    shutil.rmtree(work, ignore_errors=True)
    home.mkdir(parents=True)
    # The simulator's default density (14 days x 20,000 users: about 10 impressions per user a day).
    users = max(5_000, impressions // (per_user_day * days))
    last_day = FIRST_DAY + dt.timedelta(days=days - 1)
    settings = get_settings(home=home, airflow_port=free_port(), mlflow_port=free_port())
    env = {
        "COLDSTART_HOME": str(home),
        "COLDSTART_PROFILE": settings.profile,
        "COLDSTART_AIRFLOW_PORT": str(settings.airflow_port),
        "COLDSTART_MLFLOW_PORT": str(settings.mlflow_port),
    }
    sim_args = [
        "--days",
        str(days),
        "--users",
        str(users),
        "--impressions-per-day",
        str(impressions // days),
        "--seed",
        str(SEED),
        "--start-date",
        FIRST_DAY.isoformat(),
    ]
    chain_conf = {"date": FIRST_DAY.isoformat(), "end": last_day.isoformat(), "chain": chain}
    ab_conf = {"start": FIRST_DAY.isoformat(), "end": last_day.isoformat(), "high_exposure_threshold": 100}
    out: dict[str, Any] = {
        "impressions_requested": impressions,
        "days": days,
        "users": users,
        "simulate_args": sim_args,
        "validate_logs_conf": chain_conf,
        "ab_conf": ab_conf,
        "profile": settings.profile,
        "home": str(home),
        "load_average_at_start": os.getloadavg(),
    }
    failed, since, t_trigger, client = True, None, 0.0, None
    with _environ(env):
        print(f"[{impressions:,}] simulate {' '.join(sim_args)}", flush=True)
        sim_wall, sim_rss, _ = run([COLDSTART, "simulate", *sim_args], {**os.environ})
        out["simulated_impressions"] = _count_impressions(settings)
        out["parquet_mb"] = round(sum(p.stat().st_size for p in settings.data_dir.rglob("*.parquet")) / MB, 1)
        out["simulate"] = {"wall_s": round(sim_wall, 2), "peak_rss_mb": round(sim_rss, 1)}
        sampler = RssSampler(settings).start()
        try:
            print(
                f"[{impressions:,}] platform up on :{settings.airflow_port} (Airflow), :{settings.mlflow_port}"
                " (MLflow)",
                flush=True,
            )
            t0 = time.time()
            up(settings, timeout=600)
            t_up = time.time()
            client = AirflowClient(airflow_url(settings), ADMIN_USER, admin_password(settings), timeout=60)
            client.wait_for_dags((*CHAIN, AB_DAG), timeout=600)
            t_ready = time.time()
            out["startup"] = {
                "wall_s": round(t_ready - t0, 2),
                "up_s": round(t_up - t0, 2),
                "dags_parsed_s": round(t_ready - t_up, 2),
                **sampler.peak([(t0, t_ready)]),
            }
            out["idle_rss_mb"] = round(sampler.samples[-1].total_mb, 1) if sampler.samples else None

            print(f"[{impressions:,}] validate_logs {json.dumps(chain_conf)}", flush=True)
            since, t_trigger, clock = now(), time.time(), time.monotonic()
            client.trigger("validate_logs", chain_conf, note="benchmarks/platform_e2e.py")
            runs = _follow_chain(client, since, timeout)
            observed_chain = time.monotonic() - clock
            print(
                f"[{impressions:,}] chain quiet after {observed_chain:.0f} s; {AB_DAG} {json.dumps(ab_conf)}",
                flush=True,
            )
            t_ab = time.time()
            ab_run = client.trigger(AB_DAG, ab_conf, note="benchmarks/platform_e2e.py")
            ab_run = client.wait_run(AB_DAG, ab_run["dag_run_id"], timeout=timeout)
            observed_total = time.monotonic() - clock
            _raise_on_failure(client, [ab_run])

            all_runs = [r for rs in runs.values() for r in rs]
            chain_end = max(_ts(r["end_date"]) for r in all_runs)
            span = chain_end - t_trigger
            windows = [(_ts(r["start_date"]), _ts(r["end_date"])) for r in all_runs]
            ab_end = _ts(ab_run["end_date"])
            _name_task_processes(sampler, client, [*all_runs, ab_run])
            out["chain"] = {
                "wall_s": round(span, 2),
                "observed_until_quiet_s": round(observed_chain, 2),
                "scheduling_gaps_s": round(span - _union(windows), 2),
                "stage_overlap_s": round(sum(b - a for a, b in windows) - _union(windows), 2),
                "impressions_per_s": round(out["simulated_impressions"] / span, 1),
                **sampler.peak([(t_trigger, chain_end)]),
            }
            out["stages"] = {dag: _stage(sampler, client, runs[dag], span) for dag in CHAIN}
            out["stages"][AB_DAG] = _stage(sampler, client, [ab_run], None)
            out["chain_and_ab"] = {
                "wall_s": round(ab_end - t_trigger, 2),
                "observed_s": round(observed_total, 2),
                "ab_trigger_after_chain_end_s": round(t_ab - chain_end, 2),
                **sampler.peak([(t_trigger, ab_end)]),
            }
            failed = False
        except (ChainError, RuntimeError, ApiException) as exc:
            out["error"] = str(exc)
            if client is not None and since is not None:  # what finished before the failure, for the record
                with contextlib.suppress(Exception):
                    partial = {dag: client.runs_since(dag, since) for dag in (*CHAIN, AB_DAG)}
                    _name_task_processes(sampler, client, [r for rs in partial.values() for r in rs])
                    out["stages_partial"] = {dag: _stage(sampler, client, rs, None) for dag, rs in partial.items()}
                    out["chain_partial_peak"] = sampler.peak([(t_trigger, time.time())])
            raise CaseFailed(str(exc), out) from exc
        finally:
            sampler.stop()
            print(f"[{impressions:,}] platform down", flush=True)
            down(settings)
            out["memory"] = {
                "sample_every_s": sampler.interval,
                "sampler_cpu_s": round(sampler.cpu_s, 2),
                "sampler_errors": sampler.errors,
                "samples": [
                    [round(s.t, 2), round(s.total_mb, 1), round(s.largest_mb, 1), s.processes] for s in sampler.samples
                ],
                "largest_processes": [
                    {
                        "process": sampler.name(key),
                        "pid": p.pid,
                        "rss_mb": round(p.rss_mb, 1),
                        "with_children_mb": round(p.tree_mb, 1),
                        "command": p.label,
                    }
                    for key, p in sorted(sampler.peaks.items(), key=lambda kv: -kv[1].rss_mb)[:15]
                ],
            }
            if keep or failed:
                print(f"[{impressions:,}] work folder kept: {work}", flush=True)
            else:
                shutil.rmtree(work, ignore_errors=True)
    return out


def _count_impressions(settings: Settings) -> int:
    import pyarrow.parquet as pq

    from pipelines.data.contract import Store

    store = Store(settings.data_dir, "sim")
    return sum(
        pq.read_metadata(store.partition_path("impressions", day)).num_rows for day in store.partitions("impressions")
    )


# ---- report ---------------------------------------------------------------------------------------------------


ROW_FIELDS = ("runs", "wall_s", "task_s", "share", "peak_rss_mb", "peak_process_mb")


def rows(result: dict) -> dict[str, dict[str, Any]]:
    """The table's rows of one run: name -> the numbers shown."""
    out: dict[str, dict[str, Any]] = {
        "simulate": {
            "wall_s": result["simulate"]["wall_s"],
            "peak_rss_mb": result["simulate"]["peak_rss_mb"],
            "peak_process_mb": result["simulate"]["peak_rss_mb"],
        },
        "platform start-up": {k: result["startup"][k] for k in ("wall_s", "peak_rss_mb", "peak_process_mb")},
    }
    for dag in CHAIN:
        out[dag] = {k: result["stages"][dag][k] for k in ROW_FIELDS}
    chain = result["chain"]
    out["chain, end to end"] = {
        "runs": sum(result["stages"][d]["runs"] for d in CHAIN),
        "wall_s": chain["wall_s"],
        "task_s": round(sum(result["stages"][d]["task_s"] for d in CHAIN), 2),
        "share": 1.0,
        "peak_rss_mb": chain["peak_rss_mb"],
        "peak_process_mb": chain["peak_process_mb"],
    }
    out[AB_DAG] = {k: result["stages"][AB_DAG][k] for k in ROW_FIELDS if k != "share"}
    both = result["chain_and_ab"]
    out["chain + A/B readout"] = {
        "wall_s": both["wall_s"],
        "peak_rss_mb": both["peak_rss_mb"],
        "peak_process_mb": both["peak_process_mb"],
    }
    return out


def tasks(result: dict) -> dict[str, dict[str, Any]]:
    out = {}
    for dag, stage in result["stages"].items():
        for task in stage["tasks"]:
            key = f"{dag}.{task['task']}" + (f" (run {task['run']})" if stage["runs"] > 1 else "")
            out[key] = {
                "duration_s": task["duration_all_tries_s"],
                "tries": task["try_number"],
                "peak_rss_mb": task["peak_rss_mb"],
            }
    return out


def median_of(tables: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Field by field medians over repeats (a field missing from a repeat is left out of its median)."""
    out: dict[str, dict[str, Any]] = {}
    for name in tables[0]:
        out[name] = {}
        for key in tables[0][name]:
            values = [t[name][key] for t in tables if name in t and isinstance(t[name].get(key), int | float)]
            out[name][key] = statistics.median(values) if values else None
    return out


def _num(value: Any, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def print_tables(
    case: str, table: dict[str, dict[str, Any]], task_table: dict[str, dict[str, Any]], repeat: int
) -> None:
    what = f"median of {repeat}" if repeat > 1 else "one run"
    print(f"\n{case} ({what})\n")
    print("| stage | runs | wall s | task s | share of chain | peak RSS MB, all processes | largest process MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in table.items():
        share = "" if r.get("share") is None else f"{100 * r['share']:.0f} %"
        print(
            f"| {name} | {_num(r.get('runs'), '.0f')} | {_num(r.get('wall_s'), ',.1f')} "
            f"| {_num(r.get('task_s'), ',.1f')} | {share} | {_num(r.get('peak_rss_mb'), ',.0f')} "
            f"| {_num(r.get('peak_process_mb'), ',.0f')} |"
        )
    print("\n| task | tries | duration s | peak RSS MB (process + children) |")
    print("|---|---:|---:|---:|")
    for name, t in task_table.items():
        print(
            f"| {name} | {_num(t['tries'], '.0f')} | {_num(t['duration_s'], ',.1f')} "
            f"| {_num(t['peak_rss_mb'], ',.0f')} |"
        )


def machine() -> dict[str, Any]:
    def git(*args: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True, timeout=30).stdout.strip()
        return ""

    from importlib.metadata import version

    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "physical_cpus": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "airflow": version("apache-airflow"),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impressions", type=int, action="append", help="Impressions in the case (repeatable).")
    parser.add_argument("--days", type=int, default=7, help="Simulated days the impressions are spread over.")
    parser.add_argument(
        "--chain",
        type=json.loads,
        default=DEFAULT_CHAIN,
        help=f"validate_logs' `chain` conf (replaces the default {json.dumps(DEFAULT_CHAIN)}).",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="Seconds for the chain (and for the A/B run).")
    parser.add_argument("--per-user-day", type=int, default=10, help="Impressions per user a day (sets the users).")
    parser.add_argument("--repeat", type=int, default=1, help="Fresh runs per case (the table shows medians).")
    parser.add_argument("--keep", action="store_true", help="Keep benchmarks/.work/e2e-<N> after the run.")
    opts = parser.parse_args()
    if not opts.impressions:
        parser.error("give at least one --impressions N")
    if opts.days < 3:
        parser.error("--days must be at least 3 (training needs two days, evaluation one more)")
    # `kill` (SIGTERM) stops the platform too: the try/finally around the run sees SystemExit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results_dir = HERE / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    for n in opts.impressions:
        started = time.monotonic()
        runs_: list[dict] = []
        for i in range(opts.repeat):
            try:
                runs_.append(run_case(n, opts.days, opts.chain, opts.timeout, opts.keep, opts.per_user_day))
            except CaseFailed as exc:
                path = results_dir / f"platform_e2e_{n}.json"
                failure = {
                    "case": f"{n:,} impressions over {opts.days} days",
                    "failed_repeat": i + 1,
                    "error": str(exc),
                    "machine": machine(),
                    "runs": [*runs_, exc.partial],
                }
                path.write_text(json.dumps(failure, indent=2, default=str))
                print(
                    f"\n{n:,} impressions, repeat {i + 1}: FAILED (partial results: {path})\n{exc}",
                    file=sys.stderr,
                    flush=True,
                )
                sys.exit(1)
            except RuntimeError as exc:  # the simulator failed: nothing measured
                print(f"\n{n:,} impressions, repeat {i + 1}: FAILED\n{exc}", file=sys.stderr, flush=True)
                sys.exit(1)
        table = median_of([rows(r) for r in runs_])
        task_table = median_of([tasks(r) for r in runs_])
        summary = {
            "case": f"{n:,} impressions over {opts.days} days",
            "chain": opts.chain,
            "repeat": opts.repeat,
            "benchmark_wall_s": round(time.monotonic() - started, 1),
            "machine": machine(),
            "table": table,
            "tasks": task_table,
            "runs": runs_,
        }
        path = results_dir / f"platform_e2e_{n}.json"
        path.write_text(json.dumps(summary, indent=2, default=str))
        first = runs_[0]
        print_tables(
            f"{first['simulated_impressions']:,} impressions ({n:,} asked) over {opts.days} days, "
            f"{first['users']:,} users, profile {first['profile']}",
            table,
            task_table,
            opts.repeat,
        )
        chain = first["chain"]
        print(
            f"\nchain: {chain['impressions_per_s']:,.0f} impressions/s end to end; seen quiet by the client after "
            f"{chain['observed_until_quiet_s']:.1f} s; no DAG run running for {chain['scheduling_gaps_s']:.1f} s;"
            f" stages overlapping for {chain['stage_overlap_s']:.1f} s; idle platform {first['idle_rss_mb']} MB; "
            f"sampler CPU {first['memory']['sampler_cpu_s']} s; whole benchmark {summary['benchmark_wall_s']:.0f} s"
            f"\nresults: {path}"
        )


if __name__ == "__main__":
    main()
