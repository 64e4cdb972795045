"""A training step of PLE+UIE and ESMM at batch 4096: torch threads and OpenMP's wait policy, alone and beside
another busy process, as a platform task trains beside an evaluation on the two cores.

    .venv/bin/python benchmarks/train_step.py [--impressions 1000000] [--steps 60] [--home DIR]

On the PLE training set of one simulated week (prepared as ``offline_joins.py`` does, in ``--home``, default
``benchmarks/.work/offline-<N>``, reused when it holds the data): per case a fresh process builds the training set
(days 1-6), encodes it, builds the model as the chain does (``poso`` off, UIE on for PLE), runs 5 warm-up steps,
then times ``--steps`` Adam steps (forward, loss, backward, step) on shuffled batches. The cases: 2 threads
(OpenMP's default wait policy, which spins), 1 thread, and 2 threads with ``OMP_WAIT_POLICY=PASSIVE`` (what the
platform sets); each quiet and beside a busy process (one Python loop on a core, standing in for the evaluation
that runs beside PLE's training in the chain). Results: ``benchmarks/results/train_step_<N>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from _proc import run
from offline_joins import prepared_home

HERE = Path(__file__).resolve().parent
STEP = """
import datetime as dt, os, time, torch
from pipelines.data.contract import Store
from pipelines.features.store import get_store
from pipelines.features.training_set import build_training_set, view_joins
from pipelines.models import RANKERS
from pipelines.settings import get_settings
from pipelines.catalog import model as catalog_model
from pipelines.training.api import split_by_time
from pipelines.training.dataset import INPUT_COLUMNS, FeatureEncoder, batches
from pipelines.training.registry import build_ranker

model, steps = os.environ["BENCH_MODEL"], int(os.environ["BENCH_STEPS"])
settings = get_settings(); store = get_store(settings, "sim")
service = catalog_model(model).feature_service
features = [f for v in view_joins(store, service) for f in v.features if f in INPUT_COLUMNS]
frame = build_training_set(store, Store(settings.data_dir, "sim"), dt.date(2026, 1, 1), dt.date(2026, 1, 6), service,
                           features)
train_frame, _ = split_by_time(frame)
encoder = FeatureEncoder.fit(train_frame)
train = encoder.transform(train_frame)
config = {"poso": False} | ({"uie": {}} if model == "ple" else {})
torch.manual_seed(0)
net = build_ranker(model, encoder, RANKERS[model].config_class(**config).model_dump())
torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
optimizer = torch.optim.Adam(net.parameters(), lr=3e-3, fused=True)
net.train()
stream = batches(train, 4096, torch.Generator().manual_seed(0))

def step():
    batch = next(stream)
    loss, _ = net.loss(batch, net(batch))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()

for _ in range(5):
    step()
start = time.perf_counter()
for _ in range(steps):
    step()
print("RESULT", (time.perf_counter() - start) / steps * 1000)
"""
CASES = {"2 threads (spin)": (2, None), "1 thread": (1, None), "2 threads, OMP_WAIT_POLICY=PASSIVE": (2, "PASSIVE")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impressions", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--home", type=Path)
    args = parser.parse_args()
    _, env = prepared_home(args.impressions, args.home)
    env.pop("OMP_WAIT_POLICY", None)  # each case sets its own
    results: dict[str, dict[str, float]] = {}
    for busy in (False, True):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            for model in ("ple", "esmm"):
                for name, (threads, policy) in CASES.items():
                    case_env = env | {"BENCH_MODEL": model, "BENCH_STEPS": str(args.steps),
                                      "BENCH_THREADS": str(threads)}  # fmt: skip
                    if policy:
                        case_env["OMP_WAIT_POLICY"] = policy
                    _, _, out = run([sys.executable, "-c", STEP], case_env)
                    ms = float(out.rsplit("RESULT", 1)[1].split()[0])
                    key = f"{model}, {name}"
                    results.setdefault(key, {})["busy" if busy else "quiet"] = ms
                    print(f"{key:45s} {'beside a busy process' if busy else 'quiet':22s} {ms:7.1f} ms/step", flush=True)
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
    print("\n| model, threads | quiet ms/step | beside a busy process ms/step | busy / quiet |\n|---|---:|---:|---:|")
    for key, r in results.items():
        print(f"| {key} | {r['quiet']:.1f} | {r['busy']:.1f} | {r['busy'] / r['quiet']:.2f}x |")
    out = HERE / "results" / f"train_step_{args.impressions}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"impressions": args.impressions, "steps": args.steps, "batch": 4096,
                               "ms_per_step": results, "cpus": os.cpu_count()}, indent=2))  # fmt: skip
    print(f"results: {out}")


if __name__ == "__main__":
    main()
