"""The gate on cold slices: a cold slice no check could judge blocks unless allowed; a first model meets floors on
cold slices too; the report lists per cold slice the checks that ran and those skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.evaluation.config import GateConfig
from pipelines.evaluation.gate import decide

CFG = GateConfig(checks=("ctr:auc", "ctcvr:auc"), floors={"ctr:auc": 0.6, "ctcvr:auc": 0.6})


def report(auc: float, count: int = 1000, positives: int = 100, champion: float | None = None) -> dict:
    out = {"count": count, "positives": positives, "candidate": {"auc": {"value": auc, "ci": [auc, auc]}}}
    if champion is not None:
        out |= {"champion": {"auc": {"value": champion, "ci": [champion, champion]}},
                "delta": {"auc": {"value": auc - champion, "ci": [0, 0]}}}  # fmt: skip
    return out


def slices(cold: dict[str, dict], champion: float | None = None) -> dict:
    overall = {"ctr": report(0.7, champion=champion), "ctcvr": report(0.7, champion=champion)}
    return {"overall": {"count": 1000, "tasks": overall}} | {n: {"count": 1000, "tasks": t} for n, t in cold.items()}


def test_a_cold_slice_with_no_check_that_ran_blocks_unless_allowed() -> None:
    judged = {"ctr": report(0.7, champion=0.7), "ctcvr": report(0.7, positives=3, champion=0.7)}  # ctcvr too small
    tiny = {"ctr": report(0.7, count=80, champion=0.7), "ctcvr": report(0.7, count=80, champion=0.7)}
    result = decide(slices({"user=new": judged, "item=new": tiny}, champion=0.7), ["user=new", "item=new"], CFG, True)
    assert not result["passed"] and len(result["reasons"]) == 1
    reason = result["reasons"][0]
    assert reason.startswith("no cold-slice check could run on item=new:") and "too small to judge (80 rows" in reason
    assert "user=new" not in reason  # one check that ran judges a slice
    assert result["cold_coverage"] == {
        "user=new": {"ran": ["ctr:auc"], "skipped": [{"check": "ctcvr:auc", "reason": "too small to judge (1000 rows, "
                                                      "3 positives)"}], "judged": True},
        "item=new": {"ran": [], "skipped": [{"check": c, "reason": "too small to judge (80 rows, 100 positives)"}
                                            for c in ("ctr:auc", "ctcvr:auc")], "judged": False},
    }  # fmt: skip
    allowed = GateConfig(**CFG.model_dump() | {"allow_skipped_cold_checks": True})
    passed = decide(slices({"user=new": judged, "item=new": tiny}, champion=0.7), ["user=new", "item=new"], allowed,
                    True)  # fmt: skip
    assert passed["passed"] and passed["allow_skipped_cold_checks"]
    assert not passed["cold_coverage"]["item=new"]["judged"]  # still said


def test_an_empty_or_missing_cold_slice_and_an_uncomputable_metric_count_as_skipped() -> None:
    nan = {"ctr": report(float("nan"), champion=0.7), "ctcvr": report(float("nan"), champion=0.7)}
    cold = ["user=new&item=new", "exposure=low", "both_new"]
    result = decide(slices({"user=new&item=new": nan, "exposure=low": {}}, champion=0.7), cold, CFG, True)
    coverage = result["cold_coverage"]
    assert not any(c["judged"] for c in coverage.values())
    assert coverage["user=new&item=new"]["skipped"][0]["reason"] == "ctr:auc on user=new&item=new could not be computed"
    assert coverage["both_new"]["skipped"][0]["reason"] == "the slice is empty"
    assert "user=new&item=new, exposure=low, both_new" in result["reasons"][0]


def test_a_first_model_meets_the_floors_on_cold_slices_too() -> None:
    good, weak = {"ctr": report(0.65), "ctcvr": report(0.62)}, {"ctr": report(0.55), "ctcvr": report(0.7)}
    assert decide(slices({"user=new": good}), ["user=new"], CFG, False)["passed"]
    blocked = decide(slices({"user=new": weak}), ["user=new"], CFG, False)
    assert blocked["reasons"] == ["ctr:auc on user=new: 0.5500 misses the floor 0.6 (no champion)"]
    own = GateConfig(**CFG.model_dump() | {"cold_floors": {"ctr:auc": 0.5}})  # cold slices' own floors
    assert decide(slices({"user=new": weak}), ["user=new"], own, False)["passed"]
    # No cold floors at all: a first model's cold checks cannot run, so it needs the allowance.
    none = GateConfig(**CFG.model_dump() | {"cold_floors": {}})
    unjudged = decide(slices({"user=new": weak}), ["user=new"], none, False)
    assert not unjudged["passed"] and "no champion and no floor for this check" in unjudged["reasons"][0]
    allowed = GateConfig(**none.model_dump() | {"allow_skipped_cold_checks": True})
    assert decide(slices({"user=new": weak}), ["user=new"], allowed, False)["passed"]


def test_the_report_names_the_checks_that_ran_on_each_cold_slice(tmp_path: Path) -> None:
    from pipelines.evaluation.report import write_report

    cold = {"user=new": {"ctr": report(0.65), "ctcvr": report(0.62, positives=2)}}
    scored = slices(cold)
    gate = decide(scored, ["user=new", "item=new"], CFG, False)
    for name, coverage in gate["cold_coverage"].items():  # as evaluate_model records them
        scored.setdefault(name, {"count": 0, "tasks": {}})["checks"] = coverage
    paths = {"rows": 2, "item_oov_rows": 1, "content_knn_rows": 1, "default_row_rows": 0, "content_knn_share": 1.0,
             "new_user_rows": 2, "user_default_row_rows": 2}  # fmt: skip
    scored["user=new"]["scoring"] = {"candidate": paths}
    result = {"model": "esmm", "candidate": {"version": "1"}, "slices": scored, "cold_slices": ["user=new", "item=new"],
              "gate": gate, "scoring": {"policy": {"new_item_embedding": "content_knn"}, "versions": {}}}  # fmt: skip
    html = Path(write_report(result, tmp_path, ("ctr", "auc"), (0.005, 0.01))["html"]).read_text()
    assert "<h2>Cold slices</h2>" in html and "A cold slice no check could judge blocks the gate." in html
    assert "<td>user=new</td><td>1000</td><td>yes</td><td>ctr:auc</td><td>ctcvr:auc: too small to judge" in html
    assert "<td>item=new</td><td>0</td><td>NO</td><td>–</td><td>ctr:auc: the slice is empty" in html
    assert "1 content-kNN, 0 default row; kNN share 100%" in html and "content_knn" in html


@pytest.mark.parametrize("family", ["esmm", "melu"])
def test_the_allowance_is_off_by_default_for_every_family(family: str) -> None:
    assert GateConfig.for_model(family).allow_skipped_cold_checks is False
