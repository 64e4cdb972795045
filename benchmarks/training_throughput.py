"""Training throughput (samples/s) per model on simulator data, and ESMM / PLE against torch-rechub.

    .venv/bin/pip install --no-deps torch-rechub==0.9.0     # for this benchmark only
    .venv/bin/python benchmarks/training_throughput.py [--rows 1000000] [--repeat 3]

Data: one simulated day (~1M impressions) with 10 sparse fields (user, item, author, category, position,
recall channel, bucket, hour, device, region), labels click and conversion; embeddings of 16, batch 1024, one
epoch, Adam lr 1e-3, both cores. Ours: the platform's Trainer (tensors in memory, fused Adam). torch-rechub:
its DataGenerator / DataLoader and MTLTrainer.train_one_epoch, with the same embedding, tower and expert sizes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipelines.data.contract import Store
from pipelines.data.simulator import Simulator, SimulatorConfig
from pipelines.models import RANKERS
from pipelines.models.base import InputSpec
from pipelines.training.trainer import TrainConfig, Trainer

FIELDS = ["user_id", "item_id", "author_id", "category", "position", "recall_channel", "experiment_bucket", "hour",
          "device", "region"]  # fmt: skip
ESMM_TOWER = [360, 200, 80]
PLE = {"levels": 2, "specific_experts": 1, "shared_experts": 1, "expert": [256], "tower": [64]}


def simulated(rows: int) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp), "sim")
        Simulator(SimulatorConfig(days=1, users=max(rows // 10, 1000), impressions_per_day=rows), store).run()
        imp = store.read_range("impressions").to_pandas()
        items = store.read_range("items", columns=["item_id", "author_id", "category"]).to_pandas()
        users = store.read_range("users", columns=["user_id", "device", "region"]).to_pandas()
    frame = imp.merge(items, on="item_id").merge(users, on="user_id")
    frame["hour"] = frame["event_time"].dt.hour
    for column in FIELDS:
        frame[column] = pd.factorize(frame[column])[0] + 1  # 0 stays the default row
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)


def ours(frame: pd.DataFrame, name: str, config: dict) -> float:
    n = len(frame)
    data = {
        "sparse": torch.from_numpy(frame[FIELDS].to_numpy(np.int64)),
        "dense": torch.zeros(n, 0),
        "pc": torch.from_numpy(np.stack([np.log1p(frame["position"]), np.zeros(n), np.ones(n)], 1).astype(np.float32)),
        "seq": torch.zeros(n, 0, dtype=torch.long),
        "user": torch.from_numpy(frame["user_id"].to_numpy(np.int64)),
        "click": torch.from_numpy(frame["click"].to_numpy(np.float32)),
        "conversion": torch.from_numpy(frame["conversion"].to_numpy(np.float32)),
    }
    spec = InputSpec(
        cardinalities=tuple(int(frame[c].max()) for c in FIELDS), n_dense=0, pc_dim=3, user_fields=(0, 8, 9),
        item_field=1, n_users=int(frame["user_id"].max()),
    )  # fmt: skip
    cls = RANKERS[name.split("+")[0]]
    torch.manual_seed(0)
    model = cls(spec, cls.config_class(embed_dim=16, **config))
    trainer = Trainer(model, TrainConfig(epochs=1, batch_size=1024))
    tiny = {k: v[:2048] for k, v in data.items()}
    start = time.perf_counter()
    trainer.fit(data, tiny)
    return n / (time.perf_counter() - start)


def rechub(frame: pd.DataFrame, name: str) -> float:
    from torch_rechub.basic.features import SparseFeature
    from torch_rechub.models.multi_task import ESMM as RecESMM
    from torch_rechub.models.multi_task import PLE as RecPLE
    from torch_rechub.trainers import MTLTrainer
    from torch_rechub.utils.data import DataGenerator

    torch.set_num_threads(2)
    features = [SparseFeature(c, int(frame[c].max()) + 1, embed_dim=16) for c in FIELDS]
    x = {c: frame[c].to_numpy() for c in FIELDS}
    if name == "esmm":
        y = np.stack([frame["conversion"], frame["click"], frame["click"] * frame["conversion"]], 1).astype(np.float32)
        params = {"dims": ESMM_TOWER}
        model = RecESMM(features[:2], features[2:], params, params)
        tasks = ["classification"] * 3
    else:
        y = np.stack([frame["click"], frame["conversion"]], 1).astype(np.float32)
        towers = [{"dims": PLE["tower"]}] * 2
        model = RecPLE(features, ["classification"] * 2, n_level=2, n_expert_specific=1, n_expert_shared=1,
                       expert_params={"dims": PLE["expert"]}, tower_params_list=towers)  # fmt: skip
        tasks = ["classification"] * 2
    loader, _, _ = DataGenerator(x, y).generate_dataloader(x_val=x, y_val=y, x_test=x, y_test=y, batch_size=1024)
    trainer = MTLTrainer(model, tasks, optimizer_params={"lr": 1e-3, "weight_decay": 0.0}, n_epoch=1, device="cpu")
    start = time.perf_counter()
    trainer.train_one_epoch(loader)
    return len(frame) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "training_throughput.json")
    opts = parser.parse_args()
    frame = simulated(opts.rows)
    cases = {
        "base": {"tower": ESMM_TOWER},
        "shared_bottom": {"bottom": [256], "tower": [128, 64]},
        "esmm": {"tower": ESMM_TOWER},
        "mmoe": {"n_experts": 4, "expert": [256], "tower": [64]},
        "ple": PLE,
        "ple+poso": {**PLE, "poso": True},
        "ple+uie": {**PLE, "uie": {"use_ucse": False}},
    }
    results: dict[str, dict] = {}
    for name, config in cases.items():
        runs = [ours(frame, name, config) for _ in range(opts.repeat)]
        results[name] = {"ours_samples_per_s": statistics.median(runs), "runs": runs}
        print(name, round(results[name]["ours_samples_per_s"]), flush=True)
    try:
        import torch_rechub  # noqa: F401
    except ImportError:
        print("torch-rechub is not installed: pip install --no-deps torch-rechub==0.9.0 (benchmark only)")
    else:
        for name in ("esmm", "ple"):
            runs = [rechub(frame, name) for _ in range(opts.repeat)]
            results[name]["rechub_samples_per_s"] = statistics.median(runs)
            results[name]["rechub_runs"] = runs
            results[name]["ratio"] = results[name]["ours_samples_per_s"] / results[name]["rechub_samples_per_s"]
            print(
                name, "rechub", round(results[name]["rechub_samples_per_s"]), "ratio", round(results[name]["ratio"], 2)
            )
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps({"rows": len(frame), "results": results}, indent=2))


if __name__ == "__main__":
    main()
