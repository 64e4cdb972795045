"""Ranker and MeLU serving latency: the real `bentoml serve` on 127.0.0.1 against the bare model (the floor).

    .venv/bin/python benchmarks/serving_latency.py [--home DIR] [--requests 500] [--seconds 20] [--clients 8]

Setup (once per --home, default ``benchmarks/.work/serving``): simulate 5 days of a 5,000-user platform,
validate, compute and materialize features into Feast (SQLite online store), train ESMM for 2 epochs on days
1-4, import it into BentoML and build the ranker bento; train a small MeLU on MovieLens-1M and build its bento.

Measured, each request = one user and 200 candidate items of the last day (features from the Feast online store,
item features cached in the service after their first lookup, as in staging):

* floor: the bare forward pass of the model on the encoded 200-row batch (p50 / p99 over --requests calls), and the
  same plus feature encoding (what the pyfunc does);
* in-process ``RankerCore.rank`` (features + encoding + forward + policies), no HTTP;
* served: ``POST /rank`` through ``bentoml serve`` with 1 and 2 API workers (one torch thread each): latency from one
  sequential client, then throughput and latency with --clients concurrent clients for --seconds;
* MeLU: local adaptation on a 10-item support set + prediction of 20 candidates, in process and through ``/adapt``.

Writes ``benchmarks/results/serving_latency.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]  # for the default --home and --out (the package is installed)


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": len(samples)}


def timed(fn, n: int, warmup: int = 20) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return percentiles(samples)


def setup(home: Path) -> dict:
    """Platform, trained models and built bentos under ``home`` (reused when present)."""
    from pipelines.data.contract import Store
    from pipelines.data.simulator import Simulator, SimulatorConfig
    from pipelines.features.compute import FeatureLayout, compute_features
    from pipelines.features.store import get_store, materialize_day, plan_and_apply
    from pipelines.serving.bento import build, import_model
    from pipelines.settings import get_settings
    from pipelines.validation.validate import validate_day

    os.environ["COLDSTART_HOME"] = str(home)
    settings = get_settings(home=home)
    settings.ensure_home()
    state_file = home / "serving_benchmark.json"
    if state_file.is_file():
        return json.loads(state_file.read_text())
    data = Store(settings.data_dir, "sim")
    cfg = SimulatorConfig(days=5, users=5000, seed=7)
    Simulator(cfg, data).run()
    layout = FeatureLayout.for_dataset(settings.home, "sim")
    days = data.partitions("impressions")
    for day in days:
        validate_day(data, day, settings.reports_dir, docs=False)
        compute_features(data, layout, day)
    plan_and_apply(settings)
    store = get_store(settings)
    for day in days:
        materialize_day(store, layout, day)
    from pipelines.training.api import train_for_run

    ranker = train_for_run("esmm", "sim", days[0], days[-1], {}, {"epochs": 2, "lr": 3e-3})
    ranker_bento = build(settings, "ranker", import_model(settings, "esmm", ranker["version"]))
    from pipelines.data.movielens import ingest_movielens
    from pipelines.models.melu import MeLUConfig
    from pipelines.training.melu import train_melu

    ingest_movielens(settings.data_dir)
    melu = train_melu(settings, MeLUConfig(meta_lr=5e-4), epochs=3)
    melu_bento = build(settings, "melu", import_model(settings, "melu", melu["version"]))
    state = {"ranker_version": ranker["version"], "ranker_bento": ranker_bento, "melu_version": melu["version"],
             "melu_bento": melu_bento, "last_day": days[-1].isoformat()}  # fmt: skip
    state_file.write_text(json.dumps(state))
    return state


def ranker_requests(settings, last_day: str, n_users: int = 50) -> list[dict]:
    from pipelines.data.contract import Store

    data = Store(settings.data_dir, "sim")
    rows = data.read("impressions", dt.date.fromisoformat(last_day), layer="clean", columns=["user_id", "item_id"])
    rows = rows.to_pandas()
    items = rows["item_id"].drop_duplicates().to_numpy()
    users = rows["user_id"].drop_duplicates().head(n_users).to_numpy()
    rng = np.random.default_rng(0)
    return [{"user_id": int(u), "candidates": [int(i) for i in rng.choice(items, 200, replace=False)]} for u in users]


def floor_and_core(settings, state: dict, requests: list[dict], n: int) -> dict:
    import mlflow
    import torch

    from pipelines.serving.features import FeastFeatures
    from pipelines.serving.ranker import RankerCore

    torch.set_num_threads(1)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    wrapper = mlflow.pyfunc.load_model(f"models:/coldstart_esmm/{state['ranker_version']}").unwrap_python_model()
    core = RankerCore(wrapper, FeastFeatures(settings), None, None, state["ranker_version"])
    first = requests[0]
    user, _ = core.features.user(first["user_id"])
    items = core.features.items(first["candidates"])
    frame = items.assign(**{k: [v] * len(items) if isinstance(v, list) else v for k, v in user.items()})
    frame["user_id"] = first["user_id"]
    batch = wrapper.encoder.transform(frame)
    model = wrapper.model

    def forward():
        with torch.no_grad():
            model(batch)

    def encode_and_forward():
        with torch.no_grad():
            model(wrapper.encoder.transform(frame))

    cycle = iter(range(10**9))
    for request in requests:  # warm the item cache the way a running service is warm
        core.rank(request["user_id"], request["candidates"])
    return {
        "floor_forward": timed(forward, n),
        "floor_encode_forward": timed(encode_and_forward, n),
        "core_rank": timed(lambda: core.rank(**requests[next(cycle) % len(requests)]), n),
    }


def served(settings, bento: str, requests: list[dict], n: int, seconds: float, clients: int, workers: int,
           path: str = "/rank") -> dict:  # fmt: skip
    import httpx

    from pipelines.serving.bento import serve, stop

    process, url = serve(settings, bento, token="bench", workers=workers)
    headers = {"Authorization": "Bearer bench"}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            for request in requests:  # warm-up: item feature cache, lazy imports
                client.post(path, json=request).raise_for_status()
            cycle = iter(range(10**9))
            sequential = timed(lambda: client.post(path, json=requests[next(cycle) % len(requests)]).raise_for_status(),
                               n, warmup=0)  # fmt: skip
        samples: list[float] = []
        lock = threading.Lock()
        stop_at = time.perf_counter() + seconds

        def worker(offset: int) -> None:
            local = []
            with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
                i = offset
                while time.perf_counter() < stop_at:
                    start = time.perf_counter()
                    c.post(path, json=requests[i % len(requests)]).raise_for_status()
                    local.append(time.perf_counter() - start)
                    i += 1
            with lock:
                samples.extend(local)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
        begin = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - begin
        loaded = {**percentiles(samples), "clients": clients, "requests_per_s": len(samples) / elapsed}
        return {"workers": workers, "sequential": sequential, "loaded": loaded}
    finally:
        stop(process)


def melu_requests(settings, n_users: int = 30) -> list[dict]:
    from pipelines.data.movielens import load_rows

    rows = load_rows(settings.data_dir)
    users = rows[rows["scenario"] == "new_user"]
    out = []
    for _, group in list(users.groupby("user_id"))[:n_users]:
        support = group[group["role"] == "support"].head(10)
        if len(support) < 10:
            continue
        candidates = group[group["role"] == "query"]["item_id"].tolist()
        candidates += rows["item_id"].drop_duplicates().head(30).tolist()
        out.append({"support": [{"item_id": int(i), "rating": float(r)}
                                for i, r in zip(support["item_id"], support["rating"], strict=True)],
                    "candidates": [int(i) for i in dict.fromkeys(candidates)][:20]})  # fmt: skip
    return out


def melu_in_process(settings, state: dict, requests: list[dict], n: int) -> dict:
    import mlflow
    import pandas as pd
    import torch

    from pipelines.data.movielens import load_rows

    torch.set_num_threads(1)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    wrapper = mlflow.pyfunc.load_model(f"models:/coldstart_melu/{state['melu_version']}").unwrap_python_model()
    rows = load_rows(settings.data_dir).drop_duplicates("item_id").set_index("item_id")
    request = requests[0]
    support_rows = rows.loc[[s["item_id"] for s in request["support"]]].reset_index()
    support_rows["rating"] = [s["rating"] for s in request["support"]]
    support = wrapper.encoder.transform(pd.DataFrame(support_rows))
    query = wrapper.encoder.transform(rows.loc[request["candidates"]].reset_index().drop(columns=["rating"]))
    return {"melu_adapt_predict": timed(lambda: wrapper.model.predict(support, query), n)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=ROOT / "benchmarks" / ".work" / "serving")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serving_latency.json")
    parser.add_argument("--setup-only", action="store_true", help="Build the platform, models and bentos, then stop.")
    args = parser.parse_args()
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    state = setup(args.home.resolve())
    if args.setup_only:
        print(json.dumps(state, indent=2))
        return
    from pipelines.settings import get_settings

    settings = get_settings(home=args.home.resolve())
    requests = ranker_requests(settings, state["last_day"])
    result = {"machine": platform.platform(), "cpus": os.cpu_count(), "state": state,
              "in_process": floor_and_core(settings, state, requests, args.requests)}  # fmt: skip
    result["served"] = [served(settings, state["ranker_bento"], requests, args.requests, args.seconds, args.clients, w)
                        for w in (1, 2)]  # fmt: skip
    m_requests = melu_requests(settings)
    result["melu"] = melu_in_process(settings, state, m_requests, args.requests) | {
        "served": served(settings, state["melu_bento"], m_requests, args.requests, args.seconds, args.clients, 1,
                         path="/adapt")}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    floor = result["in_process"]["floor_forward"]
    print("| what | p50 ms | p99 ms | req/s |\n|---|---:|---:|---:|")
    for name, r in result["in_process"].items():
        print(f"| {name} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | |")
    for s in result["served"]:
        print(f"| served, {s['workers']} worker(s), 1 client | {s['sequential']['p50_ms']:.2f} | "
              f"{s['sequential']['p99_ms']:.2f} | |")  # fmt: skip
        loaded = s["loaded"]
        print(f"| served, {s['workers']} worker(s), {loaded['clients']} clients | {loaded['p50_ms']:.2f} | "
              f"{loaded['p99_ms']:.2f} | {loaded['requests_per_s']:.0f} |")  # fmt: skip
    melu = result["melu"]
    print(f"| MeLU adapt (10 ratings) + 20 predictions, in process | {melu['melu_adapt_predict']['p50_ms']:.2f} | "
          f"{melu['melu_adapt_predict']['p99_ms']:.2f} | |")  # fmt: skip
    print(
        f"| MeLU /adapt served, 1 client | {melu['served']['sequential']['p50_ms']:.2f} | "
        f"{melu['served']['sequential']['p99_ms']:.2f} | {melu['served']['loaded']['requests_per_s']:.0f} |"
    )
    ratio = result["served"][0]["sequential"]["p99_ms"] / floor["p99_ms"]
    print(f"\nserved p99 / bare-forward p99 (1 worker, 1 client): {ratio:.1f}x")


if __name__ == "__main__":
    main()
