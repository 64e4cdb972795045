"""A generic trainer: the model supplies its loss, callbacks do logging, early stopping and checkpoints.

Deterministic: each epoch seeds the global RNG (dropout), its shuffling generator and its id-dropout generator
from (seed, epoch), and a checkpoint holds the model and the optimizer, so a run killed after epoch k and resumed
gives the same weights as one that never stopped.

Id dropout (``TrainConfig.id_dropout``, :func:`~pipelines.training.dataset.drop_ids`) is a transform of the
training batches, the same for every model; validation never applies it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipelines.training.config import TrainConfig
from pipelines.training.dataset import batches, drop_ids

log = logging.getLogger(__name__)
VALIDATION_CHUNK = 65536  # rows per forward pass when validating
ID_DROPOUT_STREAM = 1 << 40  # offsets the id-dropout seed from the shuffling seed: independent streams


def distributed_rank() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside ``torchrun``. Joins the gloo process group when launched by torchrun."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


@dataclass
class TrainState:
    epoch: int = 0
    best: float = math.inf
    stale: int = 0
    stop: bool = False
    best_epoch: int = 0  # the epoch whose weights early stopping kept (1-based; 0 before any)
    history: list[dict[str, float]] = field(default_factory=list)


class Callback:
    """Hooks; each gets the trainer."""

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None: ...

    def on_train_end(self, trainer: Trainer) -> None: ...


class EarlyStopping(Callback):
    def on_epoch_end(self, trainer, metrics):
        state = trainer.state
        if metrics["val_loss"] < state.best - 1e-6:
            state.best, state.stale, state.best_epoch = metrics["val_loss"], 0, state.epoch
            trainer.best_state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        else:
            state.stale += 1
            state.stop = state.stale >= trainer.cfg.patience


class Checkpoint(Callback):
    """Writes ``last.pt`` (atomically) after every epoch."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def on_epoch_end(self, trainer, metrics):
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / "last.pt.tmp"
        torch.save(trainer.snapshot(), tmp)
        tmp.replace(self.folder / "last.pt")


class LogMetrics(Callback):
    def __init__(self, sink=None) -> None:
        self.sink = sink  # e.g. mlflow.log_metrics

    def on_epoch_end(self, trainer, metrics):
        log.info("epoch %d %s", trainer.state.epoch, {k: round(v, 5) for k, v in metrics.items()})
        if self.sink is not None and trainer.rank == 0:
            self.sink(metrics, step=trainer.state.epoch)


class Trainer:
    def __init__(
        self, model: nn.Module, cfg: TrainConfig, callbacks: list[Callback] | None = None, extra_metrics=None
    ) -> None:
        self.model, self.cfg = model, cfg
        self.callbacks = callbacks or []
        self.extra_metrics = extra_metrics  # (outputs, data) -> dict of validation metrics
        self.optimizer = torch.optim.Adam(
            model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=cfg.fused_adam
        )
        self.rank, self.world = distributed_rank()
        # Under torchrun the same code trains data-parallel: DDP averages gradients across processes.
        self.net = nn.parallel.DistributedDataParallel(model) if self.world > 1 else model
        self.state = TrainState()
        self.best_state: dict[str, torch.Tensor] | None = None
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)

    def snapshot(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "state": self.state.__dict__,
            "best_state": self.best_state,
            "rng": torch.get_rng_state(),
        }

    def resume(self, path: Path) -> None:
        snap = torch.load(path, weights_only=False)
        self.model.load_state_dict(snap["model"])
        self.optimizer.load_state_dict(snap["optimizer"])
        self.state = TrainState(**snap["state"])
        self.best_state = snap["best_state"]
        if "best_epoch" not in snap["state"] and self.best_state is not None:
            # a checkpoint from before best_epoch was recorded: replay early stopping's rule over the history
            best = math.inf
            for epoch, metrics in enumerate(self.state.history, start=1):
                if metrics["val_loss"] < best - 1e-6:
                    best, self.state.best_epoch = metrics["val_loss"], epoch
        torch.set_rng_state(snap["rng"])

    def validate(self, data: dict[str, torch.Tensor]) -> tuple[float, dict[str, torch.Tensor]]:
        """The loss over ``data`` and the model's outputs for every row, from one forward pass in chunks."""
        self.model.eval()
        total, n, parts = 0.0, 0, []
        with torch.no_grad():  # in chunks: one forward over a 1.4M-row day holds GBs of activations
            for batch in batches(data, VALIDATION_CHUNK):
                out = self.model(batch)
                loss, _ = self.model.loss(batch, out)
                size = len(batch["click"]) if "click" in batch else 1
                total, n = total + float(loss) * size, n + size
                parts.append(out)
        outputs = {k: torch.cat([part[k] for part in parts]) for k in parts[0]} if parts else {}
        return total / max(n, 1), outputs

    def kept_metrics(self) -> dict[str, float]:
        """The validation metrics of the epoch whose weights the model holds after :meth:`fit`."""
        history = self.state.history
        epoch = self.state.best_epoch if self.best_state is not None else len(history)
        return dict(history[epoch - 1]) if 0 < epoch <= len(history) else {}

    def fit(self, train: dict[str, torch.Tensor], val: dict[str, torch.Tensor]) -> TrainState:
        from tqdm import tqdm

        while self.state.epoch < self.cfg.epochs and not self.state.stop:
            self.model.train()
            # Everything random in an epoch (shuffle, dropout) derives from (seed, epoch): reruns and resumes agree.
            torch.manual_seed(self.cfg.seed * 1000 + self.state.epoch)
            generator = torch.Generator().manual_seed(self.cfg.seed * 1000 + self.state.epoch)
            unknown = torch.Generator().manual_seed(ID_DROPOUT_STREAM + self.cfg.seed * 1000 + self.state.epoch)
            running, steps = 0.0, 0
            # on the global batch, before a DDP rank takes its slice: every rank drops what one process would
            epoch_batches = (drop_ids(b, self.cfg.id_dropout, unknown)
                             for b in batches(train, self.cfg.batch_size, generator))  # fmt: skip
            if self.world > 1:
                # Each rank takes its slice of every global batch: the same steps as one process, and DDP's
                # gradient average over the slices is the gradient of the whole batch.
                epoch_batches = (
                    {k: v[self.rank :: self.world] for k, v in b.items()}
                    for b in epoch_batches
                    if len(b["sparse"]) >= self.world  # a rank must never get an empty slice
                )
            for batch in tqdm(epoch_batches, disable=not self.cfg.progress or self.rank > 0):
                loss, _ = self.model.loss(batch, self.net(batch))
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                running, steps = running + float(loss.detach()), steps + 1
            self.state.epoch += 1
            # One pass over the validation day gives the loss (early stopping) and the extra metrics (AUCs).
            val_loss, outputs = self.validate(val)
            metrics = {"train_loss": running / max(steps, 1), "val_loss": val_loss}
            if self.extra_metrics is not None:
                metrics |= self.extra_metrics(outputs, val)
            self.state.history.append(metrics)
            for callback in self.callbacks:
                callback.on_epoch_end(self, metrics)
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        for callback in self.callbacks:
            callback.on_train_end(self)
        return self.state
