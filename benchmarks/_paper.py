"""Shared by the paper benchmarks (ESMM vs BASE, PLE variants): one simulated platform, frames, training, stats.

The platform (simulated logs, validated days, feature snapshots, Feast registry and online store) is built once
under ``--home`` and reused by every run and by both benchmarks; ``platform.json`` records the simulator config
it was built with, and a home built with another config is refused rather than silently reused. The
point-in-time frames of each feature service are cached there too (``frames/*.parquet``), so a second run goes
straight to training.

Models are trained with the platform's ``FeatureEncoder`` and ``Trainer`` directly (the sequence of
``pipelines.training.api.train_model`` without MLflow): encoder fitted on the training days, the last day of the
training window validates (early stopping on its loss), then the held-out days after the window are scored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import platform as host
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger("benchmarks.paper")

ROOT = Path(__file__).resolve().parent
DEFAULT_HOME = ROOT / ".work" / "paper"
RESULTS = ROOT / "results"

# The simulated platform both benchmarks share. 8 days of 12,000 initial users (~120k impressions a day; building
# it, Feast materialization included, takes ~5 minutes): day 1 has no feature snapshot before it (every row would
# be cold), so training starts on day 2; days 2-5 train, day 6 validates, days 7-8 are held out. Signups are 3 %
# of the user base a day instead of the simulator's 1 %, so new users (signed up < 7 days ago) are ~9 % of
# held-out impressions rather than ~3 %: still a minority, with ~3,900 held-out clicks for their AUC.
SIM_DEFAULTS = {"days": 8, "users": 12_000, "seed": 2018, "new_users_per_day": 0.03}


@dataclass
class Platform:
    settings: object
    data: object
    layout: object
    days: list[dt.date]
    sim: dict


def sim_config(days: int, users: int, seed: int, **overrides) -> dict:
    return {**SIM_DEFAULTS, "days": days, "users": users, "seed": seed, **overrides}


def default_home(sim: dict) -> Path:
    """``benchmarks/.work/paper`` for the default platform; another config gets its own folder beside it."""
    if sim == SIM_DEFAULTS:
        return DEFAULT_HOME
    return DEFAULT_HOME.with_name(f"paper-{hashlib.sha1(json.dumps(sim, sort_keys=True).encode()).hexdigest()[:8]}")


def windows(days: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(training window, held-out window) as 1-based inclusive day numbers of a ``days``-day simulation.

    Training starts on day 2 (day 1 has no snapshot before it), its last day validates, the last two days are
    held out.
    """
    if days < 5:
        raise SystemExit("--days must be at least 5: day 1 warms the features up, 2 train days, 2 held-out days")
    return (2, days - 2), (days - 1, days)


def build_platform(home: Path, sim: dict) -> Platform:
    """Simulate, validate, compute features, apply and materialize Feast under ``home``; reuse it if built.

    Mirrors ``tests/integration/conftest.py::build_platform`` plus its ``feast_store`` fixture.
    """
    from pipelines.data.contract import Store
    from pipelines.data.simulator import Simulator, SimulatorConfig
    from pipelines.features.compute import FeatureLayout, compute_features
    from pipelines.features.store import get_store, materialize_day, plan_and_apply
    from pipelines.settings import get_settings
    from pipelines.validation.validate import validate_day

    home = home.resolve()
    os.environ["COLDSTART_HOME"] = str(home)  # Feast's repo files read the home from the environment
    settings = get_settings(home=home)
    cfg = SimulatorConfig(**sim)
    days = [cfg.start_date + dt.timedelta(days=i) for i in range(cfg.days)]
    data = Store(settings.data_dir, "sim")
    layout = FeatureLayout.for_dataset(settings.home, "sim")
    marker = home / "platform.json"
    wanted = cfg.model_dump(mode="json")
    if marker.is_file():
        built = json.loads(marker.read_text())
        if built != wanted:
            raise SystemExit(f"{home} holds a platform built with another simulator config; pass another --home "
                             f"or delete it.\nbuilt:  {built}\nwanted: {wanted}")  # fmt: skip
        return Platform(settings, data, layout, days, sim)
    if home.exists() and any(home.iterdir()):
        raise SystemExit(f"{home} is not empty and holds no finished platform: delete it or pass another --home")
    settings.ensure_home()
    start = time.perf_counter()
    summary = Simulator(cfg, data).run()
    log.info("simulated %s in %.0f s", summary, time.perf_counter() - start)
    for day in days:
        validate_day(data, day, settings.reports_dir, docs=False)
        compute_features(data, layout, day)
    log.info("validated and computed features at %.0f s", time.perf_counter() - start)
    plan_and_apply(settings)
    feast = get_store(settings)
    for day in days:
        materialize_day(feast, layout, day)
    log.info("platform built in %.0f s", time.perf_counter() - start)
    marker.write_text(json.dumps(wanted, indent=2))
    return Platform(settings, data, layout, days, sim)


def frames(p: Platform, service: str, train_days: tuple[int, int], test_days: tuple[int, int]):
    """(train, validation, test) frames of ``service``; test is annotated and carries the simulator's truth.

    Cached as parquet under the home, keyed by service and window.
    """
    from pipelines.evaluation.slices import annotate
    from pipelines.features.store import get_store
    from pipelines.features.training_set import build_training_set

    day = lambda i: p.days[i - 1]  # noqa: E731
    if train_days[1] >= test_days[0] or test_days[1] > len(p.days):
        raise SystemExit(f"held-out days {test_days} must follow the training window {train_days} within the "
                         f"{len(p.days)} simulated days")  # fmt: skip
    folder = p.settings.home / "frames"
    folder.mkdir(exist_ok=True)
    key = f"{service}_{day(train_days[0])}_{day(train_days[1])}_{day(test_days[0])}_{day(test_days[1])}"
    paths = {part: folder / f"{key}_{part}.parquet" for part in ("fit", "test")}
    if not all(path.is_file() for path in paths.values()):
        start = time.perf_counter()
        feast = get_store(p.settings)
        fit = build_training_set(feast, p.data, day(train_days[0]), day(train_days[1]), service)
        test = build_training_set(feast, p.data, day(test_days[0]), day(test_days[1]), service)
        users = p.data.read_range("users", end=day(test_days[1]), layer="clean",
                                  columns=["user_id", "signup_time"]).to_pandas()  # fmt: skip
        items = p.data.read_range("items", end=day(test_days[1]), layer="clean",
                                  columns=["item_id", "publish_time"]).to_pandas()  # fmt: skip
        test = annotate(test, users, items)
        # The hidden truth, merged as pipelines.evaluation.api.evaluate_ranker does.
        columns = ["request_id", "position", "p_click", "p_conversion_given_click"]
        truth = p.data.read_range("impression_truth", day(test_days[0]), day(test_days[1]), "truth", columns)
        test = test.merge(truth.to_pandas(), on=["request_id", "position"], how="left")
        test["true_ctr"], test["true_cvr"] = test.pop("p_click"), test.pop("p_conversion_given_click")
        test["true_ctcvr"] = test["true_ctr"] * test["true_cvr"]
        fit.to_parquet(paths["fit"])
        test.to_parquet(paths["test"])
        log.info("point-in-time frames of %s built in %.0f s", service, time.perf_counter() - start)
    fit, test = pd.read_parquet(paths["fit"]), pd.read_parquet(paths["test"])
    days = pd.to_datetime(fit["event_time"]).dt.date
    last = day(train_days[1])
    return fit[days < last].reset_index(drop=True), fit[days == last].reset_index(drop=True), test


@dataclass
class Encoded:
    """Tensors of the three frames under one encoder fitted on the training days."""

    encoder: object
    train: dict
    val: dict
    test: dict


def encode(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame) -> Encoded:
    from pipelines.training.dataset import FeatureEncoder

    encoder = FeatureEncoder.fit(train)
    return Encoded(encoder, encoder.transform(train), encoder.transform(val), encoder.transform(test))


def train_and_predict(
    name: str, model_config: dict, enc: Encoded, epochs: int, seed: int, threads: int = 1, callbacks=None
) -> tuple[pd.DataFrame, dict]:
    """Fit one ranker (seeded), return its test predictions (p_ctr, p_cvr, p_ctcvr) and run facts.

    ``callbacks`` replace the default early stopping on the validation loss (best epoch restored, patience 2).
    One torch thread by default: on the 2-core machine shared with other work, two OpenMP threads spin against
    the other processes and train ~5x slower (measured 6.5k vs 31k samples/s for ESMM).
    """
    import torch

    from pipelines.training.api import output_aucs
    from pipelines.training.registry import build_ranker
    from pipelines.training.trainer import EarlyStopping, TrainConfig, Trainer

    tcfg = TrainConfig(epochs=epochs, seed=seed, threads=threads)
    torch.manual_seed(seed)
    net = build_ranker(name, enc.encoder, model_config)
    start = time.perf_counter()
    callbacks = [EarlyStopping()] if callbacks is None else callbacks
    state = Trainer(net, tcfg, callbacks, output_aucs).fit(enc.train, enc.val)
    seconds = time.perf_counter() - start
    net.eval()
    with torch.no_grad():
        out = net(enc.test)
    preds = pd.DataFrame({k: out[k].numpy().astype(np.float64) for k in ("p_ctr", "p_cvr", "p_ctcvr")})
    facts = {"train_seconds": seconds, "epochs_run": state.epoch, "history": state.history}
    uie = getattr(net, "uie", None)
    if uie is not None:
        facts["uie_user_centroid_entropy"] = float(uie.user_memory.usage_entropy())
    return preds, facts


def score(frame: pd.DataFrame, scores: dict[str, pd.DataFrame], cfg, names: tuple[str, ...]) -> dict:
    """``pipelines.evaluation.api.score_slices`` restricted to the slices ``names``.

    score_slices scores every built-in slice (user and item new/warm, exposure buckets: ~4x the rows of
    ``overall``), with per-user AUCs and a bootstrap each, which took ~280 s per call here; the benchmarks need
    two or three slices. Same masks (``slice_masks``), same task rows, same ``binary_report`` and
    ``oracle_gap``, and the same entire-space CVR label draw (seeded by ``cfg.seed``).
    """
    from sklearn.metrics import roc_auc_score

    from pipelines.evaluation.metrics import binary_report, oracle_gap
    from pipelines.evaluation.slices import slice_masks

    masks = slice_masks(frame, cfg.slices)
    click = frame["click"].to_numpy()
    tasks = {
        "ctr": (np.ones(len(frame), bool), click, "p_ctr", "true_ctr"),
        "cvr": (click > 0, frame["conversion"].to_numpy() * click, "p_cvr", "true_cvr"),
        "ctcvr": (np.ones(len(frame), bool), frame["conversion"].to_numpy() * click, "p_ctcvr", "true_ctcvr"),
    }
    # "Would have converted had it been clicked", for every impression: drawn once from the true CVR.
    counterfactual = np.random.default_rng(cfg.seed).random(len(frame)) < frame["true_cvr"].to_numpy()
    users = frame["user_id"].to_numpy()
    out = {}
    for name in names:
        mask = masks[name]
        entry = {"count": int(mask.sum()), "tasks": {}}
        for task in cfg.tasks:
            rows, labels, column, truth = tasks[task]
            keep = mask & rows
            preds = {who: s[column].to_numpy()[keep] for who, s in scores.items()}
            report = binary_report(labels[keep], preds, users[keep], cfg.n_bootstrap, cfg.seed)
            report["oracle"] = oracle_gap(labels[keep], preds["candidate"], frame[truth].to_numpy()[keep])
            if task == "cvr" and 0 < counterfactual[mask].sum() < mask.sum():
                report["oracle"] |= {
                    f"entire_space_auc_{who}": float(roc_auc_score(counterfactual[mask], s["p_cvr"].to_numpy()[mask]))
                    for who, s in scores.items()
                }
            entry["tasks"][task] = report
        out[name] = entry
    return out


def t_interval(values: list[float], level: float = 0.95) -> dict:
    """Mean and Student-t interval over seeds (None when fewer than 2 finite values)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return {"mean": None, "ci": [None, None], "n": 0, "values": list(values)}
    mean = float(x.mean())
    if len(x) < 2 or x.std(ddof=1) == 0:
        return {"mean": mean, "ci": [mean, mean] if len(x) > 1 else [None, None], "n": len(x), "values": list(values)}
    low, high = stats.t.interval(level, len(x) - 1, loc=mean, scale=stats.sem(x))
    return {"mean": mean, "ci": [float(low), float(high)], "n": len(x), "values": list(values)}


def fmt(summary: dict, scale: float = 100.0, signed: bool = False) -> str:
    """``mean ± half-width`` in points (×100) of a :func:`t_interval` summary."""
    if summary["mean"] is None:
        return "–"
    mean = summary["mean"] * scale
    text = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    if summary["ci"][0] is None:
        return text
    return f"{text} ± {(summary['ci'][1] - summary['ci'][0]) * scale / 2:.2f}"


def fmt_mean(summary: dict | None) -> str:
    """``mean ± half-width`` of a :func:`t_interval` summary in its own units (``–`` without a value)."""
    if summary is None or summary["mean"] is None:
        return "–"
    if summary["ci"][0] is None:
        return f"{summary['mean']:.3f}"
    return f"{summary['mean']:.3f} ± {(summary['ci'][1] - summary['ci'][0]) / 2:.3f}"


def fresh_log(folder: Path, seed: int, days: int, users: int, **sim):
    """A fresh simulated log (``design=none``) in ``folder`` (emptied first): (store, simulator config)."""
    import shutil

    from pipelines.data.contract import Store
    from pipelines.data.simulator import Simulator, SimulatorConfig

    shutil.rmtree(folder, ignore_errors=True)
    cfg = SimulatorConfig(seed=seed, days=days, users=users, design="none", **sim)
    store = Store(folder, "sim")
    Simulator(cfg, store).run()
    return store, cfg


def fmt_bootstrap(delta: dict) -> str | None:
    """``+0.12 [-0.03, +0.27]`` in points from a ``binary_report`` delta entry; None without an interval."""
    if delta["value"] is None or delta["ci"][0] is None:
        return None
    low, high = delta["ci"]
    return f"{delta['value'] * 100:+.2f} [{low * 100:+.2f}, {high * 100:+.2f}]"


def machine() -> dict:
    import torch

    return {"python": host.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "date": dt.date.today().isoformat()}  # fmt: skip


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("feast", "great_expectations", "urllib3", "numexpr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
