"""Data-parallel training entry point, for users who outgrow one machine.

    torchrun --nproc_per_node 2 -m pipelines.training.ddp --model esmm --frame training_set.parquet

Every process reads the same point-in-time training set (a parquet file written by
``pipelines.features.training_set.build_training_set``), the trainer shards each epoch's batches across the
processes and DDP (gloo on CPU) averages the gradients; rank 0 alone logs to MLflow and registers the model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from pipelines.settings import get_settings
from pipelines.training.api import train_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--frame", type=Path, required=True, help="Training set parquet (time-split inside).")
    parser.add_argument("--config", default="{}", help="JSON model config overrides.")
    parser.add_argument("--train-config", default="{}", help="JSON trainer config overrides.")
    opts = parser.parse_args(argv)
    frame = pd.read_parquet(opts.frame)
    result = train_model(
        get_settings(), opts.model, frame, json.loads(opts.config), json.loads(opts.train_config),
        {"frame": str(opts.frame)},
    )  # fmt: skip
    if result.get("run_id"):
        print(json.dumps(result))


if __name__ == "__main__":
    main()
