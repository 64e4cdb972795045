"""Offline metrics with bootstrap confidence intervals. AUC, logloss and calibration come from :class:`WeightedRows`:
the point estimate with every row counted once, each resample of scipy's paired bootstrap (drawn as scipy draws
them, see :func:`_row_bootstrap`) with rows counted as often as drawn; both are tested equal to scikit-learn's
``roc_auc_score`` / ``log_loss`` (with ``sample_weight``). GAUC comes from per-user rank sums (:func:`user_aucs`,
tested equal to ``roc_auc_score`` per user); MAE, RMSE and nDCG from scikit-learn.

Binary tasks (CTR, CVR, CTCVR): AUC, GAUC (per-user AUC averaged with impression weights over users who have
both outcomes), logloss, calibration (mean predicted / observed rate), count and positive rate. Confidence
intervals are percentile bootstrap intervals: rows are resampled for AUC, logloss and calibration, users for
GAUC (a user's impressions are not independent). Candidate and champion are resampled *together* (paired), so
the interval of their difference is the interval of a difference on the same rows.

Ratings (MeLU): MAE, RMSE and nDCG@k per user query set, with intervals from resampling users.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import pandas as pd
from scipy.stats import bootstrap
from sklearn.metrics import mean_absolute_error, mean_squared_error, ndcg_score

BINARY_METRICS = ("auc", "gauc", "logloss", "calibration", "positive_rate")
ROW_METRICS = ("auc", "logloss", "calibration")  # what WeightedRows.values gives, in its order
HIGHER_IS_BETTER = {"auc": True, "gauc": True, "logloss": False, "calibration": None, "mae": False, "rmse": False,
                    "ndcg@1": True, "ndcg@3": True}  # fmt: skip
EPS = 1e-7


def _point(y: np.ndarray, p: np.ndarray) -> list[float]:
    """AUC, logloss, calibration of one score vector (AUC nan without both classes)."""
    return WeightedRows(y, p).point() if len(y) else [math.nan] * 3


class WeightedRows:
    """AUC, logloss and calibration of one score vector on reweighted copies of fixed rows, in O(n) each.

    A bootstrap resample of the rows is the rows weighted by how often each was drawn. The scores are sorted
    once, so each resample's AUC is a weighted Mann–Whitney sum over the sorted order (tied scores count one
    half, as in ``roc_auc_score``) instead of a fresh sort and sklearn's input checks: at 1.4M rows this is
    what makes 50 resamples of every slice affordable. Equal to ``roc_auc_score`` / ``log_loss`` with
    ``sample_weight`` (tested).
    """

    def __init__(self, y: np.ndarray, p: np.ndarray) -> None:
        y = np.asarray(y, dtype=np.float64)
        p = np.asarray(p, dtype=np.float64)
        if not np.isfinite(p).all():  # sklearn's check: a NaN score would sort silently and give a wrong AUC
            raise ValueError(f"scores contain {int((~np.isfinite(p)).sum())} NaN or infinite values")
        self.order = np.argsort(p, kind="stable")
        ranked = p[self.order]
        self.groups = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])  # first row of each tie group
        self.positive = y[self.order] > 0
        clipped = np.clip(p, EPS, 1 - EPS)
        self.loss = -(y * np.log(clipped) + (1 - y) * np.log1p(-clipped))
        self.y, self.p = y, p

    def values(self, weights: np.ndarray) -> list[float]:
        """[AUC, logloss, calibration] with row ``i`` counted ``weights[i]`` times."""
        total = weights.sum()
        if total <= 0:
            return [math.nan] * 3
        ranked = weights[self.order]
        pos = np.add.reduceat(np.where(self.positive, ranked, 0.0), self.groups)
        neg = np.add.reduceat(np.where(self.positive, 0.0, ranked), self.groups)
        n_pos, n_neg = pos.sum(), neg.sum()
        auc = float((pos * (np.cumsum(neg) - neg / 2)).sum() / (n_pos * n_neg)) if n_pos and n_neg else math.nan
        observed = (weights * self.y).sum() / total
        calibration = float((weights * self.p).sum() / total / observed) if observed > 0 else math.nan
        return [auc, float((weights * self.loss).sum() / total), calibration]

    def point(self) -> list[float]:
        """[AUC, logloss, calibration] of the rows as they are: ``roc_auc_score``'s and ``log_loss``'s values,
        without their input checks and second sort (0.9 s a call at 1.4M rows against 0.07 s)."""
        return self.values(np.ones(len(self.y)))


def user_aucs(y: np.ndarray, p: np.ndarray, users: np.ndarray) -> pd.DataFrame:
    """Per-user AUC and impression count, for users with both a positive and a negative.

    Thousands of users make one ``roc_auc_score`` call each too slow (its input checks dominate), so the AUC of
    every user comes at once from the Mann–Whitney identity on within-user average ranks:
    AUC = (R₊ − n₊(n₊+1)/2) / (n₊ n₋), R₊ the rank sum of the positives. It equals ``roc_auc_score`` per user,
    ties included (tested).
    """
    frame = pd.DataFrame({"y": np.asarray(y, dtype=np.float64), "p": p, "u": users})
    frame["rank"] = frame.groupby("u", sort=False)["p"].rank(method="average")
    grouped = frame.assign(pos_rank=frame["rank"] * frame["y"]).groupby("u", sort=False)
    stats = grouped.agg(n=("y", "size"), n_pos=("y", "sum"), rank_sum=("pos_rank", "sum"))
    stats = stats[(stats["n_pos"] > 0) & (stats["n_pos"] < stats["n"])]
    n_neg = stats["n"] - stats["n_pos"]
    auc = (stats["rank_sum"] - stats["n_pos"] * (stats["n_pos"] + 1) / 2) / (stats["n_pos"] * n_neg)
    return pd.DataFrame({"auc": auc.to_numpy(), "weight": stats["n"].to_numpy(float)}, index=stats.index)


def gauc(y: np.ndarray, p: np.ndarray, users: np.ndarray) -> float:
    """Impression-weighted mean of per-user AUCs (users with one outcome only carry no ranking signal)."""
    per_user = user_aucs(y, p, users)
    return float(np.average(per_user["auc"], weights=per_user["weight"])) if len(per_user) else math.nan


def _interval(result, index: int) -> tuple[float, float]:
    low, high = result.confidence_interval.low[index], result.confidence_interval.high[index]
    return float(low), float(high)


def _bootstrap(samples: tuple, statistic, n_resamples: int, seed: int):
    with warnings.catch_warnings():  # degenerate resamples (nan) are expected on tiny slices
        warnings.simplefilter("ignore")
        return bootstrap(samples, statistic, paired=True, vectorized=False, n_resamples=n_resamples,
                         method="percentile", random_state=seed)  # fmt: skip


def _row_bootstrap(n: int, statistic, n_resamples: int, seed: int):
    """scipy's paired percentile bootstrap of ``n`` rows, one resample at a time; ``statistic(drawn indices)``.

    The same draws (scipy's generator for an integer seed is ``RandomState(seed)``; n indices per resample, in
    order) and the same interval (``scipy.stats.quantile`` of the resample statistics; nan when one is nan) as
    ``scipy.stats.bootstrap((rows,), paired=True, method="percentile", random_state=seed)``: tested equal. What
    it leaves out is scipy materialising every resample: at 1.4M held-out rows, a [resamples, n] index array
    (570 MB for 50) and the gather of the data through it, more than half of an evaluation's bootstrap time.
    """
    from scipy.stats import quantile

    rng = np.random.RandomState(seed)
    with warnings.catch_warnings():  # degenerate resamples (nan) are expected on tiny slices
        warnings.simplefilter("ignore")
        theta = np.stack([statistic(rng.randint(0, n, n)) for _ in range(n_resamples)], axis=-1)
        low, high = np.moveaxis(quantile(theta, np.array([0.025, 0.975]), axis=-1), -1, 0)
    return SimpleNamespace(confidence_interval=SimpleNamespace(low=low, high=high))


def _value(value: float, ci: tuple[float, float] | None = None) -> dict:
    finite = lambda v: None if v is None or not math.isfinite(v) else float(v)  # noqa: E731
    return {"value": finite(value), "ci": [finite(ci[0]), finite(ci[1])] if ci else [None, None]}


def binary_report(
    y: np.ndarray,
    scores: dict[str, np.ndarray],
    users: np.ndarray,
    n_bootstrap: int = 200,
    seed: int = 0,
    min_positives: int = 5,
) -> dict:
    """Metrics of each named score vector on labels ``y``, plus ``delta`` = first − second when there are two.

    Returns ``{"count", "positives", "positive_rate", name: {metric: {value, ci}}, "delta": {...}}``. Metrics
    that need both classes are ``None`` when the slice has fewer than ``min_positives`` positives or negatives.
    """
    y = np.asarray(y, dtype=np.int8)
    names = list(scores)
    ps = [np.asarray(scores[n], dtype=np.float64) for n in names]
    positives = int(y.sum())
    out: dict = {"count": int(len(y)), "positives": positives, "positive_rate": positives / len(y) if len(y) else None}
    enough = min(positives, len(y) - positives) >= min_positives
    rows = [WeightedRows(y, p) for p in ps] if len(y) else []
    points = [r.point() for r in rows] if rows else [[math.nan] * 3 for _ in ps]
    boot = _row_intervals(len(y), rows, n_bootstrap, seed) if enough and n_bootstrap > 0 else None
    per_user = [user_aucs(y, p, users) for p in ps] if enough else []
    gboot = None
    if enough and n_bootstrap > 0 and len(per_user[0]) >= 2:
        gboot = _gauc_intervals(per_user, n_bootstrap, seed)
    for i, name in enumerate(names):
        out[name] = _binary_entry(i, points[i], per_user[i] if per_user else None, enough, boot, gboot)
    if len(names) == 2:
        out["delta"] = _binary_delta(out[names[0]], out[names[1]], boot, gboot)
    return out


def _row_intervals(n: int, rows: list[WeightedRows], n_bootstrap: int, seed: int):
    """Paired row bootstrap of every vector's AUC, logloss and calibration, then first − second of each.

    The statistic's index ``3 * i + j`` is metric ``j`` of ``ROW_METRICS`` for vector ``i``; with two vectors,
    ``6 + j`` is their difference.
    """

    def statistic(drawn):
        weights = np.bincount(drawn, minlength=n).astype(np.float64)
        values = [r.values(weights) for r in rows]
        flat = [v for vs in values for v in vs]
        if len(rows) == 2:
            flat += [a - b for a, b in zip(values[0], values[1], strict=True)]
        return np.array(flat)

    return _row_bootstrap(n, statistic, n_bootstrap, seed)


def _gauc_intervals(per_user: list[pd.DataFrame], n_bootstrap: int, seed: int):
    """Paired user bootstrap of every vector's GAUC (index ``i``) and, with two vectors, their difference (2)."""
    weights = per_user[0]["weight"].to_numpy(float)
    aucs = [pu["auc"].to_numpy() for pu in per_user]

    def gstat(w, *a):
        vals = [np.average(x, weights=w) for x in a]
        return np.array(vals + ([vals[0] - vals[1]] if len(vals) == 2 else []))

    return _bootstrap((weights, *aucs), gstat, n_bootstrap, seed)


def _binary_entry(i: int, point: list[float], user_auc: pd.DataFrame | None, enough: bool, boot, gboot) -> dict:
    """The metrics of score vector ``i``: its point estimates with their intervals, and its GAUC."""
    entry = {}
    for j, metric in enumerate(ROW_METRICS):
        value = point[j] if (enough or metric != "auc") else math.nan
        entry[metric] = _value(value, _interval(boot, 3 * i + j) if boot else None)
    g = (float(np.average(user_auc["auc"], weights=user_auc["weight"]))
         if user_auc is not None and len(user_auc) else math.nan)  # fmt: skip
    entry["gauc"] = _value(g, _interval(gboot, i) if gboot else None)
    entry["users_in_gauc"] = int(len(user_auc)) if user_auc is not None else 0
    return entry


def _binary_delta(first: dict, second: dict, boot, gboot) -> dict:
    """First − second of each metric of two :func:`_binary_entry` results, with the paired intervals."""
    delta = {}
    for j, metric in enumerate(ROW_METRICS):
        a, b = first[metric]["value"], second[metric]["value"]
        value = a - b if a is not None and b is not None else math.nan
        delta[metric] = _value(value, _interval(boot, 6 + j) if boot else None)
    a, b = first["gauc"]["value"], second["gauc"]["value"]
    delta["gauc"] = _value(a - b if a is not None and b is not None else math.nan,
                           _interval(gboot, 2) if gboot else None)  # fmt: skip
    return delta


def oracle_gap(y: np.ndarray, p_model: np.ndarray, p_true: np.ndarray) -> dict:
    """How far the model is from scoring with the simulator's true probabilities (positive gap = room left)."""
    model, oracle = _point(np.asarray(y), np.asarray(p_model, float)), _point(np.asarray(y), np.asarray(p_true, float))
    finite = lambda v: None if not math.isfinite(v) else float(v)  # noqa: E731
    return {
        "oracle_auc": finite(oracle[0]),
        "oracle_logloss": finite(oracle[1]),
        "auc_gap": finite(oracle[0] - model[0]),
        "logloss_gap": finite(model[1] - oracle[1]),
    }


def rating_report(
    tasks: Sequence[tuple[np.ndarray, dict[str, np.ndarray]]],
    ks: Sequence[int] = (1, 3),
    n_bootstrap: int = 200,
    seed: int = 0,
) -> dict:
    """MAE, RMSE and nDCG@k of rating predictions, one query set per user.

    ``tasks`` holds, per user, the true query ratings and a dict name -> predicted ratings. nDCG uses the true
    ratings as graded relevance (as MeLU does) and is averaged over users; MAE and RMSE pool every query rating.
    Intervals resample users. With two names, ``delta`` = first − second.
    """
    names = list(tasks[0][1]) if tasks else []
    per_user = _per_user_rating_terms(tasks, names, ks)
    metrics = ["mae", "rmse", *[f"ndcg@{k}" for k in ks]]
    cols = {n: {k: np.asarray(v, float) for k, v in per_user[n].items()} for n in names}
    points = {n: _rating_values(cols[n], ks) for n in names}
    boot = _rating_intervals(cols, names, ks, n_bootstrap, seed) if len(tasks) >= 2 and n_bootstrap > 0 else None
    out: dict = {"users": len(tasks), "ratings": int(sum(len(t[0]) for t in tasks))}
    for i, name in enumerate(names):
        out[name] = {
            m: _value(float(points[name][j]), _interval(boot, i * len(metrics) + j) if boot else None)
            for j, m in enumerate(metrics)
        }
    if len(names) == 2:
        out["delta"] = {
            m: _value(
                float(points[names[0]][j] - points[names[1]][j]),
                _interval(boot, 2 * len(metrics) + j) if boot else None,
            )  # fmt: skip
            for j, m in enumerate(metrics)
        }
    return out


def _per_user_rating_terms(
    tasks: Sequence[tuple[np.ndarray, dict[str, np.ndarray]]], names: list[str], ks: Sequence[int]
) -> dict[str, dict[str, list]]:
    """name -> term -> one value per user: summed absolute and squared errors, rating count, nDCG@k.

    A user with a single query rating has nDCG 1 (any order of one item is ideal).
    """
    per_user = {n: {"abs": [], "sq": [], "n": [], **{f"ndcg@{k}": [] for k in ks}} for n in names}
    for truth, predictions in tasks:
        truth = np.asarray(truth, float)
        for name in names:
            pred = np.asarray(predictions[name], float)
            d = per_user[name]
            d["abs"].append(mean_absolute_error(truth, pred) * len(truth))
            d["sq"].append(mean_squared_error(truth, pred) * len(truth))
            d["n"].append(len(truth))
            for k in ks:
                d[f"ndcg@{k}"].append(ndcg_score([truth], [pred], k=k) if len(truth) > 1 else 1.0)
    return per_user


def _rating_values(arrays: dict[str, np.ndarray], ks: Sequence[int], axis=-1) -> list:
    """[MAE, RMSE, nDCG@k for each k] from per-user terms along ``axis`` (errors pooled, nDCG averaged)."""
    n = arrays["n"].sum(axis=axis)
    out = [arrays["abs"].sum(axis=axis) / n, np.sqrt(arrays["sq"].sum(axis=axis) / n)]
    return out + [arrays[f"ndcg@{k}"].mean(axis=axis) for k in ks]


def _rating_intervals(
    cols: dict[str, dict[str, np.ndarray]], names: list[str], ks: Sequence[int], n_bootstrap: int, seed: int
):
    """scipy's paired, vectorised user bootstrap of every name's rating metrics, then first − second of each."""
    keys = list(cols[names[0]])
    flat = tuple(cols[n][k] for n in names for k in keys)

    def statistic(*arrays, axis=-1):
        out = []
        for i, _ in enumerate(names):
            chunk = dict(zip(keys, arrays[i * len(keys) : (i + 1) * len(keys)], strict=True))
            out.append(_rating_values(chunk, ks, axis))
        stacked = [v for vs in out for v in vs]
        if len(names) == 2:
            stacked += [a - b for a, b in zip(out[0], out[1], strict=True)]
        return np.stack(stacked)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bootstrap(flat, statistic, paired=True, vectorized=True, n_resamples=n_bootstrap,
                         method="percentile", random_state=seed)  # fmt: skip
