"""The promotion gate: a candidate against the current champion, slice by slice.

Rules, in metric units (AUC points, MAE in stars):

* overall: the candidate may not be worse than the champion by more than ``overall_tolerance``;
* every cold slice (new users, new items, their cross, the lowest exposure bucket): not worse by more than
  ``cold_tolerance``; a slice with fewer than ``min_count`` rows or ``min_positives`` positives is too small to
  judge and is recorded as skipped, never as a pass or a fail;
* with no champion yet, the overall value must clear the absolute ``floors`` instead.

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


def decide(slices: dict[str, dict], cold: list[str], cfg: GateConfig, has_champion: bool) -> dict:
    """Apply the gate to per-slice results.

    ``slices[name]`` is ``{"count": rows, "tasks": {task: report}}`` where a report holds ``candidate`` and, with
    a champion, ``champion`` and ``delta`` (``{metric: {"value", "ci"}}``) and ``count`` / ``positives``.
    Returns ``{"passed", "reasons", "checks"}``.
    """
    checks, reasons = [], []
    for name in ["overall", *cold]:
        if name not in slices:
            continue
        tolerance = cfg.overall_tolerance if name == "overall" else cfg.cold_tolerance
        for check in cfg.checks:
            task, _, metric = check.partition(":")
            report = slices[name]["tasks"].get(task)
            row = {"slice": name, "check": check, "tolerance": tolerance}
            if report is None:
                checks.append(row | {"outcome": "skipped", "reason": f"no {task} task in this evaluation"})
                continue
            count, positives = report.get("count", 0), report.get("positives", report.get("count", 0))
            negatives = count - positives if "positives" in report else count
            cand = _value(report.get("candidate"), metric)
            row |= {"candidate": cand, "count": count}
            if name != "overall" and (count < cfg.min_count or min(positives, negatives) < cfg.min_positives):
                checks.append(row | {"outcome": "skipped", "reason": f"too small to judge ({count} rows, "
                                                                     f"{positives} positives)"})  # fmt: skip
                continue
            if cand is None or not math.isfinite(cand):
                outcome = "fail" if name == "overall" else "skipped"
                reason = f"{check} on {name} could not be computed"
                checks.append(row | {"outcome": outcome, "reason": reason})
                if outcome == "fail":
                    reasons.append(reason)
                continue
            higher = HIGHER_IS_BETTER[metric]
            if has_champion:
                champ = _value(report.get("champion"), metric)
                delta = report.get("delta", {}).get(metric, {"value": None, "ci": [None, None]})
                worse_by = (champ - cand) if higher else (cand - champ)
                row |= {"champion": champ, "delta": delta["value"], "delta_ci": delta["ci"], "worse_by": worse_by}
                if worse_by > tolerance:
                    reason = (f"{check} on {name}: candidate {cand:.4f} vs champion {champ:.4f} is worse by "
                              f"{worse_by:.4f} > tolerance {tolerance}")  # fmt: skip
                    checks.append(row | {"outcome": "fail", "reason": reason})
                    reasons.append(reason)
                else:
                    checks.append(row | {"outcome": "pass", "reason": f"worse by {worse_by:.4f} ≤ {tolerance}"})
            elif name == "overall" and check in cfg.floors:
                floor = cfg.floors[check]
                ok = cand >= floor if higher else cand <= floor
                reason = f"{check} on overall: {cand:.4f} {'meets' if ok else 'misses'} the floor {floor} (no champion)"
                checks.append(row | {"floor": floor, "outcome": "pass" if ok else "fail", "reason": reason})
                if not ok:
                    reasons.append(reason)
            else:
                checks.append(row | {"outcome": "skipped", "reason": "no champion and no floor for this check"})
    return {"passed": not reasons, "reasons": reasons, "checks": checks, "has_champion": has_champion}
