"""How a ranker is scored for evaluation: on clean impressions of the days *after* its training window (read
from the candidate run's ``lineage.end`` tag), joined point-in-time to their features through Feast, sliced by
cold-start segment, each task (CTR, CVR on clicked rows, CTCVR) with bootstrap intervals and, from the
simulator's truth layer, the gap to the true probabilities. The ranker family's ``evaluate`` hook.

Each version is scored through the code the ranker bento serves with (:meth:`RankerCore.score_frame`, the
encoding, new-item embedding and forward pass of ``/rank``), with the policies the bento serves (the
``ranker_policies`` setting, and the evaluation's ``policies`` overrides) and the known-items table the bento packs
(:func:`~pipelines.serving.ranker_bento.known_items`) as of the version's training end: a new item of the held-out
days is scored on a content-kNN row as served, not on row 0 of the raw model. Rows of users the feature store does
not know take serving's new-user path. Which path scored each cold slice (content-kNN vs default rows, new-user
rows) is recorded per slice. A model that is not a torch ranker (no encoder and network) is scored by its
pyfunc's ``predict``, and the report says so.
"""

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


def _pyfunc_predict(wrapper, frame: pd.DataFrame, chunk: int = 200_000) -> pd.DataFrame:
    parts = [wrapper.predict(None, frame.iloc[i : i + chunk]) for i in range(0, len(frame), chunk)]
    return pd.concat(parts, ignore_index=True)


def train_end_of(contest: Contest, version) -> dt.date | None:
    """The last day of ``version``'s training window (its run's ``lineage.end`` tag), or None."""
    tags = contest.client.get_run(version.run_id).data.tags
    return dt.date.fromisoformat(tags["lineage.end"]) if "lineage.end" in tags else None


def serving_policy(contest: Contest):
    """The PolicyConfig the ranker bento serves (the ``ranker_policies`` setting), with the evaluation's overrides."""
    from pipelines.serving.policies import PolicyConfig

    return PolicyConfig(**{**contest.settings.ranker_policies, **contest.config.policies})


def score_version(contest: Contest, version, frame: pd.DataFrame, policy, start: dt.date) -> tuple[pd.DataFrame, dict]:
    """One version's scores of ``frame`` and how it was scored.

    A torch ranker goes through :class:`RankerCore` with ``policy`` and the known items as of its training end
    (never later than the day before ``start``: no stats of the held-out days); any other pyfunc through its own
    ``predict``.
    """
    import mlflow
    import torch

    from pipelines.serving.content_vectors import load_tower
    from pipelines.serving.ranker import RankerCore
    from pipelines.serving.ranker_bento import known_items

    wrapper = mlflow.pyfunc.load_model(f"models:/{contest.model.registered_name}/{version.version}")
    wrapper = wrapper.unwrap_python_model()
    if not (hasattr(wrapper, "encoder") and isinstance(getattr(wrapper, "model", None), torch.nn.Module)):
        why = "not a torch ranker (no encoder and network): the pyfunc scores its own rows"
        return _pyfunc_predict(wrapper, frame), {"path": "pyfunc.predict", "why": why}
    as_of = min(train_end_of(contest, version) or start, start - dt.timedelta(days=1))
    knn = policy.new_item_embedding == "content_knn"  # the default policy reads no neighbours
    items = known_items(contest.settings.home, contest.dataset, as_of) if knn else None
    # The champion content tower, as the bento packs it: known and held-out new items in the same space.
    tower = load_tower(contest.settings) if knn and policy.knn_vectors == "tower" else None
    core = RankerCore(wrapper, items=items, config=policy, version=str(version.version), tower=tower)
    scores = core.score_frame(frame)
    pool = int(len(core.knn[0].item_ids)) if core.knn else 0
    return scores, {"path": "RankerCore.score_frame", "known_items_as_of": as_of.isoformat(),
                    "known_items": 0 if items is None else int(len(items)), "knn_neighbour_pool": pool,
                    "knn_vectors": core.knn_vectors,
                    "content_tower_version": tower.version if tower is not None else None}  # fmt: skip


def scoring_paths(masks: dict[str, np.ndarray], scores: dict[str, pd.DataFrame], names: list[str]) -> dict:
    """Per slice in ``names`` and scorer: how its rows were scored (see :meth:`RankerCore.score_frame`).

    ``item_oov_rows`` are rows whose item the model never saw; of those, ``content_knn_rows`` were scored on a
    content-kNN row and ``default_row_rows`` on the learned default row; ``new_user_rows`` took the new-user code
    and ``user_default_row_rows`` the default user row. None when the scorer was a plain pyfunc.
    """
    out: dict = {}
    for name in names:
        mask = masks[name]
        for who, s in scores.items():
            if "item_oov" not in s:
                out.setdefault(name, {})[who] = None
                continue
            flag = {k: int(s[k].to_numpy()[mask].sum()) for k in ("item_oov", "item_knn_row", "item_default_row",
                                                                    "new_user_path", "user_oov")}  # fmt: skip
            oov = flag["item_oov"]
            out.setdefault(name, {})[who] = {
                "rows": int(mask.sum()), "item_oov_rows": oov, "content_knn_rows": flag["item_knn_row"],
                "default_row_rows": flag["item_default_row"],
                "content_knn_share": flag["item_knn_row"] / oov if oov else None,
                "new_user_rows": flag["new_user_path"], "user_default_row_rows": flag["user_oov"],
            }  # fmt: skip
    return out


def serving_users(frame: pd.DataFrame, user_columns: list[str]) -> int:
    """Make the rows of users the store has no features for what serving builds: no user features, and
    ``is_new_user`` 1. In place (the frame is the evaluation's own: no copy of a large frame); returns how many
    rows that touched.

    Serving calls a user known when any scalar user feature is present (list features come back empty for an
    unknown user), and otherwise drops them all and takes the new-user path
    (:meth:`~pipelines.serving.ranker.RankerCore.rank`).
    """
    from pipelines.serving.features import _LIST_FEATURES

    present = [c for c in user_columns if c in frame]
    scalar = [c for c in present if c not in _LIST_FEATURES]
    unknown = ~frame[scalar].notna().any(axis=1).to_numpy() if scalar else np.ones(len(frame), bool)
    if unknown.any():  # its scalar features are null already: only lists (a recent-click history) and the flag change
        for column in (c for c in present if c in _LIST_FEATURES):
            frame.loc[unknown, column] = None
        flag = frame["is_new_user"] if "is_new_user" in frame else pd.Series(np.nan, index=frame.index)
        frame["is_new_user"] = np.where(unknown, 1.0, pd.to_numeric(flag, errors="coerce").to_numpy(float))
    return int(unknown.sum())


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


def evaluation_frame(contest: Contest, data: Store, start: dt.date, end: dt.date) -> tuple[pd.DataFrame, dict]:
    """The held-out impressions with their point-in-time features (unknown users as serving builds them, see
    :func:`serving_users`), slicing quantities and (simulator) truth; and facts about the frame (``has_truth``,
    ``store_unknown_user_rows``)."""
    from pipelines.features.store import get_store
    from pipelines.features.training_set import build_training_set, view_joins
    from pipelines.serving.features import USER_VIEWS

    store = get_store(contest.settings, contest.dataset)
    frame = build_training_set(store, data, start, end, EVAL_SERVICE)
    user_columns = [f for view in view_joins(store, EVAL_SERVICE) if view.name in USER_VIEWS for f in view.features]
    unknown_users = serving_users(frame, user_columns)
    users = data.read_range("users", end=end, layer="clean", columns=["user_id", "signup_time"]).to_pandas()
    items = data.read_range("items", end=end, layer="clean", columns=["item_id", "publish_time"]).to_pandas()
    frame = annotate(frame, users, items)
    truth = _truth(data, start, end)
    if truth is not None:
        frame = frame.merge(truth, on=["request_id", "position"], how="left")
        frame["true_ctr"], frame["true_cvr"] = frame.pop("p_click"), frame.pop("p_conversion_given_click")
        frame["true_ctcvr"] = frame["true_ctr"] * frame["true_cvr"]
    return frame, {"has_truth": truth is not None, "store_unknown_user_rows": unknown_users}


def score_ranker(contest: Contest) -> dict:
    """The ranker family's ``evaluate`` hook: candidate and champion on the held-out days, per slice, each scored
    as the ranker bento serves it (:func:`score_version`).

    Returns the recorded outcome instead (``reused``) when this exact evaluation already ran.
    """
    cfg, name = contest.config, contest.model.registered_name
    train_end = train_end_of(contest, contest.candidate)
    data = Store(contest.settings.data_dir, contest.dataset)
    start, end = held_out_window(data, train_end, contest.start, contest.end, cfg.eval_days)
    policy = serving_policy(contest)
    key = evaluation_key(cfg, contest.gate, contest.dataset, start, end, contest.champion,
                         policy.model_dump(mode="json"))  # fmt: skip
    recorded = recorded_evaluation(contest, key)
    if recorded is not None:
        log.info("%s v%s was evaluated with key %s: its recorded outcome stands", name, contest.candidate.version, key)
        return recorded
    log.info("evaluating %s v%s on %s %s..%s", name, contest.candidate.version, contest.dataset, start, end)
    frame, facts = evaluation_frame(contest, data, start, end)
    scored = {who: score_version(contest, version, frame, policy, start) for who, version in contest.versions()}
    scores = {who: s for who, (s, _) in scored.items()}
    slices = score_slices(frame, scores, cfg)
    cold = cold_slices(list(slices), cfg.slices)
    for slice_name, paths in scoring_paths(slice_masks(frame, cfg.slices), scores, ["overall", *cold]).items():
        slices[slice_name]["scoring"] = paths
    return {
        "dataset": contest.dataset,
        "window": {"start": start.isoformat(), "end": end.isoformat(), "train_end": str(train_end)},
        "rows": int(len(frame)),
        "slice_config": cfg.slices.model_dump(mode="json"),
        "cold_slices": cold,
        "has_truth": facts["has_truth"],
        "scoring": {
            "policy": policy.model_dump(mode="json"),
            "store_unknown_user_rows": facts["store_unknown_user_rows"],
            "versions": {who: info for who, (_, info) in scored.items()},
        },
        "slices": slices,
        "calibration": calibration_curves(frame, scores, cfg, ["overall", *[c for c in cold if "&" in c]]),
        "evaluation_key": key,
    }
