"""How a ranker is scored for evaluation: on clean impressions of the days *after* its training window (read
from the candidate run's ``lineage.end`` tag), joined point-in-time to their features through Feast, sliced by
cold-start segment, each task (CTR, CVR on clicked rows, CTCVR) with bootstrap intervals and, from the
simulator's truth layer, the gap to the true probabilities. The ranker family's ``evaluate`` hook."""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pandas as pd

from pipelines.data.contract import Store
from pipelines.evaluation.api import Contest, EvaluationError, evaluation_key, recorded_evaluation
from pipelines.evaluation.config import EvaluationConfig
from pipelines.evaluation.metrics import WeightedRows, binary_report, oracle_gap
from pipelines.evaluation.slices import annotate, cold_slices, slice_masks

log = logging.getLogger(__name__)

# The evaluation frame reads the widest feature service, so every ranker finds the columns it was trained on.
EVAL_SERVICE = "ple_uie_v1"


def held_out_window(data: Store, train_end: dt.date | None, start: dt.date | None, end: dt.date | None,
                    eval_days: int) -> tuple[dt.date, dt.date]:  # fmt: skip
    """The evaluation days: as given, else the ``eval_days`` clean days right after the training window."""
    days = data.partitions("impressions", layer="clean")
    if start is None:
        if train_end is None:
            raise EvaluationError("the candidate records no training window (lineage.end): pass --start/--end")
        later = [d for d in days if d > train_end]
        if not later:
            raise EvaluationError(
                f"no clean day after the training window (ends {train_end}) in dataset {data.dataset!r}: "
                f"validate and materialize later days, or pass a window (clean days: {days[0] if days else '–'}.."
                f"{days[-1] if days else '–'})"
            )
        start = later[0]
        end = end or later[min(eval_days, len(later)) - 1]
    end = end or start
    if end < start:
        raise EvaluationError(f"window ends ({end}) before it starts ({start})")
    if train_end is not None and start <= train_end:
        raise EvaluationError(f"window {start}..{end} overlaps the training window (ends {train_end}): held-out "
                              "evaluation needs later days")  # fmt: skip
    missing = [d for d in pd.date_range(start, end).date if d not in days]
    if missing:
        raise EvaluationError(f"no clean impressions for {', '.join(map(str, missing))} in {data.dataset!r}")
    return start, end


def _predict(uri: str, frame: pd.DataFrame, chunk: int = 200_000) -> pd.DataFrame:
    import mlflow

    model = mlflow.pyfunc.load_model(uri).unwrap_python_model()
    parts = [model.predict(None, frame.iloc[i : i + chunk]) for i in range(0, len(frame), chunk)]
    return pd.concat(parts, ignore_index=True)


def _truth(data: Store, start: dt.date, end: dt.date) -> pd.DataFrame | None:
    if not any(start <= d <= end for d in data.partitions("impression_truth", layer="truth")):
        return None
    columns = ["request_id", "position", "p_click", "p_conversion_given_click"]
    return data.read_range("impression_truth", start, end, layer="truth", columns=columns).to_pandas()


def _task_rows(frame: pd.DataFrame, task: str) -> tuple[np.ndarray, np.ndarray, str, str | None]:
    """(row mask, labels, score column, truth column) of a task: CVR lives on clicked rows only."""
    click, conversion = frame["click"].to_numpy(), frame["conversion"].to_numpy() * frame["click"].to_numpy()
    if task == "ctr":
        return np.ones(len(frame), bool), click, "p_ctr", "true_ctr"
    if task == "cvr":
        return click > 0, conversion, "p_cvr", "true_cvr"
    if task == "ctcvr":
        return np.ones(len(frame), bool), conversion, "p_ctcvr", "true_ctcvr"
    raise EvaluationError(f"unknown task {task!r}; choose from ctr, cvr, ctcvr")


def score_slices(frame: pd.DataFrame, scores: dict[str, pd.DataFrame], cfg: EvaluationConfig) -> dict:
    """Per slice and task: the binary report of each scorer (``candidate`` first), and the oracle gap.

    ``frame`` is annotated (see :func:`annotate`) and carries ``click``, ``conversion``, ``user_id`` and, from the
    simulator, ``true_ctr`` / ``true_cvr`` / ``true_ctcvr``.
    """
    masks = slice_masks(frame, cfg.slices)
    users = frame["user_id"].to_numpy()
    out = {}
    for name, mask in masks.items():
        entry = {"count": int(mask.sum()), "tasks": {}}
        for task in cfg.tasks:
            rows, labels, column, truth = _task_rows(frame, task)
            keep = mask & rows
            if not keep.any():
                continue
            preds = {who: s[column].to_numpy()[keep] for who, s in scores.items()}
            report = binary_report(labels[keep], preds, users[keep], cfg.n_bootstrap, cfg.seed)
            if truth in frame:
                report["oracle"] = oracle_gap(labels[keep], preds["candidate"], frame[truth].to_numpy()[keep])
                if task == "cvr":  # pCVR over the entire impression space against counterfactual conversions
                    report["oracle"] |= _entire_space_cvr(frame, mask, scores, cfg.seed)
            entry["tasks"][task] = report
        out[name] = entry
    return out


def _entire_space_cvr(frame: pd.DataFrame, mask: np.ndarray, scores: dict, seed: int) -> dict:
    """AUC of pCVR over *all* impressions of the slice, against conversions drawn from the true CVR.

    Only a simulator can do this: the label "would have converted had it been clicked" exists for every
    impression there. It measures what ESMM claims to fix, the sample selection bias of clicked-only training.
    """
    rng = np.random.default_rng(seed)
    labels = rng.random(len(frame)) < frame["true_cvr"].to_numpy()
    labels = labels[mask]
    if labels.all() or not labels.any():
        return {}
    return {f"entire_space_auc_{who}": WeightedRows(labels, s["p_cvr"].to_numpy()[mask]).point()[0]
            for who, s in scores.items()}  # fmt: skip


def calibration_curves(frame: pd.DataFrame, scores: dict, cfg: EvaluationConfig, names: list[str]) -> dict:
    from sklearn.calibration import calibration_curve

    masks = slice_masks(frame, cfg.slices)
    curves: dict = {}
    for task in cfg.tasks:
        rows, labels, column, _ = _task_rows(frame, task)
        for name in names:
            keep = masks[name] & rows
            positives = int(labels[keep].sum())
            if positives < 5 or labels[keep].all():
                continue
            bins = min(cfg.calibration_bins, max(2, positives // 10))  # about ten positives per bin at least
            for who, s in scores.items():
                observed, predicted = calibration_curve(labels[keep], s[column].to_numpy()[keep], n_bins=bins,
                                                        strategy="quantile")  # fmt: skip
                curves.setdefault(task, {}).setdefault(name, {})[who] = [predicted.tolist(), observed.tolist()]
    return curves


def evaluation_frame(contest: Contest, data: Store, start: dt.date, end: dt.date) -> tuple[pd.DataFrame, bool]:
    """The held-out impressions with their point-in-time features, slicing quantities and (simulator) truth."""
    from pipelines.features.store import get_store
    from pipelines.features.training_set import build_training_set

    settings = contest.settings
    frame = build_training_set(get_store(settings, contest.dataset), data, start, end, EVAL_SERVICE)
    users = data.read_range("users", end=end, layer="clean", columns=["user_id", "signup_time"]).to_pandas()
    items = data.read_range("items", end=end, layer="clean", columns=["item_id", "publish_time"]).to_pandas()
    frame = annotate(frame, users, items)
    truth = _truth(data, start, end)
    if truth is not None:
        frame = frame.merge(truth, on=["request_id", "position"], how="left")
        frame["true_ctr"], frame["true_cvr"] = frame.pop("p_click"), frame.pop("p_conversion_given_click")
        frame["true_ctcvr"] = frame["true_ctr"] * frame["true_cvr"]
    return frame, truth is not None


def score_ranker(contest: Contest) -> dict:
    """The ranker family's ``evaluate`` hook: candidate and champion on the held-out days, per slice.

    Returns the recorded outcome instead (``reused``) when this exact evaluation already ran.
    """
    cfg, name = contest.config, contest.model.registered_name
    tags = contest.client.get_run(contest.candidate.run_id).data.tags
    train_end = dt.date.fromisoformat(tags["lineage.end"]) if "lineage.end" in tags else None
    data = Store(contest.settings.data_dir, contest.dataset)
    start, end = held_out_window(data, train_end, contest.start, contest.end, cfg.eval_days)
    key = evaluation_key(cfg, contest.gate, contest.dataset, start, end, contest.champion)
    recorded = recorded_evaluation(contest, key)
    if recorded is not None:
        log.info("%s v%s was evaluated with key %s: its recorded outcome stands", name, contest.candidate.version, key)
        return recorded
    log.info("evaluating %s v%s on %s %s..%s", name, contest.candidate.version, contest.dataset, start, end)
    frame, has_truth = evaluation_frame(contest, data, start, end)
    scores = {who: _predict(f"models:/{name}/{version.version}", frame) for who, version in contest.versions()}
    slices = score_slices(frame, scores, cfg)
    cold = cold_slices(list(slices), cfg.slices)
    return {
        "dataset": contest.dataset,
        "window": {"start": start.isoformat(), "end": end.isoformat(), "train_end": str(train_end)},
        "rows": int(len(frame)),
        "slice_config": cfg.slices.model_dump(mode="json"),
        "cold_slices": cold,
        "has_truth": has_truth,
        "slices": slices,
        "calibration": calibration_curves(frame, scores, cfg, ["overall", *[c for c in cold if "&" in c]]),
        "evaluation_key": key,
    }
