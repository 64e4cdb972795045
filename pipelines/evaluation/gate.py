"""The promotion gate: a candidate against the current champion, slice by slice.

Rules, in metric units (AUC points, MAE in stars):

* overall: the candidate may not be worse than the champion by more than ``overall_tolerance``;
* every cold slice (new users, new items, their cross, the lowest exposure bucket): not worse by more than
  ``cold_tolerance``; a slice with fewer than ``min_count`` rows or ``min_positives`` positives is too small to
  judge, and a metric that cannot be computed on it (one class only) says nothing: such a check is recorded as
  skipped, never as a pass or a fail;
* with no champion yet, the overall value must clear the absolute ``floors``, and each cold slice the
  ``cold_floors`` (by default the same floors): a first model has nothing to be compared with, so it must show
  on new users and new items, as overall, that it is better than a floor;
* every cold slice must be judged: at least one of its checks must have run (passed or failed). A cold slice whose
  every check was skipped blocks the gate, naming the slice and why, unless ``allow_skipped_cold_checks``.

Why "at least one check per cold slice", not "every check": each cold slice protects a population of its own, and
a candidate that could not be judged on one of them has not shown it serves that population; but conversions are
rare, so a CTCVR check on a small cold slice is often too small where the CTR check on the same rows is not, and
demanding every check would push every small window to the allowance, which then hides wholly unjudged slices
too. The gate's ``cold_coverage`` (and each cold slice's ``checks`` in the report) lists what ran and what was
skipped, with the reasons, so a reader sees how much of the decision rests on which slices.

"Worse" follows the metric's direction (AUC up, logloss and MAE down). The decision is on the point estimate;
each check also records the bootstrap interval of the difference so a reader can see how sure it is.
"""

from __future__ import annotations

import math

from pipelines.evaluation.config import GateConfig
from pipelines.evaluation.metrics import HIGHER_IS_BETTER


def _value(entry: dict | None, metric: str) -> float | None:
    if not entry or metric not in entry:
        return None
    return entry[metric]["value"]


def _against_champion(row: dict, report: dict, check: str, name: str, cand: float, higher: bool) -> dict:
    metric, tolerance = check.partition(":")[2], row["tolerance"]
    champ = _value(report.get("champion"), metric)
    delta = report.get("delta", {}).get(metric, {"value": None, "ci": [None, None]})
    worse_by = (champ - cand) if higher else (cand - champ)
    row |= {"champion": champ, "delta": delta["value"], "delta_ci": delta["ci"], "worse_by": worse_by}
    if worse_by > tolerance:
        reason = (f"{check} on {name}: candidate {cand:.4f} vs champion {champ:.4f} is worse by {worse_by:.4f} > "
                  f"tolerance {tolerance}")  # fmt: skip
        return row | {"outcome": "fail", "reason": reason}
    return row | {"outcome": "pass", "reason": f"worse by {worse_by:.4f} ≤ {tolerance}"}


def _check(entry: dict | None, name: str, check: str, cfg: GateConfig, has_champion: bool) -> dict:
    """One check of one slice: a row with ``outcome`` pass / fail / skipped and its ``reason``."""
    task, _, metric = check.partition(":")
    cold = name != "overall"
    row = {"slice": name, "check": check, "tolerance": cfg.cold_tolerance if cold else cfg.overall_tolerance}
    report = (entry or {}).get("tasks", {}).get(task)
    if report is None:
        why = "the slice is empty" if not (entry or {}).get("count") else f"no {task} task in this evaluation"
        return row | {"outcome": "skipped", "reason": why}
    count, positives = report.get("count", 0), report.get("positives", report.get("count", 0))
    negatives = count - positives if "positives" in report else count
    cand = _value(report.get("candidate"), metric)
    row |= {"candidate": cand, "count": count}
    if cold and (count < cfg.min_count or min(positives, negatives) < cfg.min_positives):
        return row | {"outcome": "skipped", "reason": f"too small to judge ({count} rows, {positives} positives)"}
    if cand is None or not math.isfinite(cand):
        return row | {"outcome": "skipped" if cold else "fail", "reason": f"{check} on {name} could not be computed"}
    higher = HIGHER_IS_BETTER[metric]
    if has_champion:
        return _against_champion(row, report, check, name, cand, higher)
    floor = cfg.floors_for(name).get(check)
    if floor is None:
        return row | {"outcome": "skipped", "reason": "no champion and no floor for this check"}
    ok = cand >= floor if higher else cand <= floor
    reason = f"{check} on {name}: {cand:.4f} {'meets' if ok else 'misses'} the floor {floor} (no champion)"
    return row | {"floor": floor, "outcome": "pass" if ok else "fail", "reason": reason}


def cold_coverage(checks: list[dict], cold: list[str]) -> dict[str, dict]:
    """Per cold slice: the checks that ran (``ran``: passed or failed), those skipped with their reasons
    (``skipped``: ``[{"check", "reason"}]``), and whether the slice was judged (at least one check ran)."""
    coverage = {name: {"ran": [], "skipped": []} for name in cold}
    for row in checks:
        if row["slice"] not in coverage:
            continue
        if row["outcome"] == "skipped":
            coverage[row["slice"]]["skipped"].append({"check": row["check"], "reason": row["reason"]})
        else:
            coverage[row["slice"]]["ran"].append(row["check"])
    return {name: entry | {"judged": bool(entry["ran"])} for name, entry in coverage.items()}


def _unjudged_reason(coverage: dict[str, dict]) -> str | None:
    unjudged = {name: c["skipped"] for name, c in coverage.items() if not c["judged"]}
    if not unjudged:
        return None
    why = "; ".join(f"{name} (" + (", ".join(f"{s['check']}: {s['reason']}" for s in skipped) or "no checks") + ")"
                    for name, skipped in unjudged.items())  # fmt: skip
    return (
        f"no cold-slice check could run on {', '.join(unjudged)}: {why}. Evaluate on more held-out data, or "
        "set allow_skipped_cold_checks to pass without judging these slices"
    )


def decide(slices: dict[str, dict], cold: list[str], cfg: GateConfig, has_champion: bool) -> dict:
    """Apply the gate to per-slice results.

    Args:
        slices: ``slices[name]`` is ``{"count": rows, "tasks": {task: report}}`` where a report holds
            ``candidate`` and, with a champion, ``champion`` and ``delta`` (``{metric: {"value", "ci"}}``) and
            ``count`` / ``positives``.
        cold: the cold slices; one missing from ``slices`` counts as empty (nothing ran on it).
        cfg: tolerances, floors and the allowance.
        has_champion: compare with the champion (else floors).

    Returns:
        ``{"passed", "reasons", "checks", "has_champion", "cold_coverage", "allow_skipped_cold_checks"}``.
    """
    names = (["overall"] if "overall" in slices else []) + list(cold)
    checks = [_check(slices.get(name), name, check, cfg, has_champion) for name in names for check in cfg.checks]
    reasons = [row["reason"] for row in checks if row["outcome"] == "fail"]
    coverage = cold_coverage(checks, cold)
    unjudged = _unjudged_reason(coverage)
    if unjudged and not cfg.allow_skipped_cold_checks:
        reasons.append(unjudged)
    return {"passed": not reasons, "reasons": reasons, "checks": checks, "has_champion": has_champion,
            "cold_coverage": coverage, "allow_skipped_cold_checks": cfg.allow_skipped_cold_checks}  # fmt: skip
