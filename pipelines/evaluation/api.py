"""Evaluate the registered ``candidate`` of any model in the catalog against its ``champion``, report, and gate.

The model's family scores the contest (its ``evaluate`` hook: the rankers on the clean days after their training
window, MeLU on MovieLens-1M's four scenarios); what follows is the same for every family. Each evaluation is one
MLflow run in the experiment ``coldstart_evaluation`` holding the JSON and HTML report; the gate's outcome is set
as tags on that run and on the model version, and a pass points the alias ``approved`` at the version for the
promote DAG. Each cold slice's entry in ``evaluation.json`` lists the gate's checks that ran on it and those
skipped, with the reasons (``checks``); the rankers' also say how its rows were scored (``scoring``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.catalog import EVALUATION_EXPERIMENT, Model
from pipelines.catalog import model as catalog_model
from pipelines.catalog.registry import registry_client, version_by_alias
from pipelines.evaluation.config import EvaluationConfig, GateConfig
from pipelines.settings import Settings, get_settings, use_mlflow_experiment

log = logging.getLogger(__name__)

APPROVED = "approved"


class EvaluationError(RuntimeError):
    """The evaluation cannot run as asked (no candidate, no held-out day, overlapping window)."""


@dataclass(frozen=True)
class Contest:
    """One evaluation: the candidate (and champion) of a model, where and how to score them."""

    settings: Settings
    model: Model
    client: Any
    candidate: Any
    champion: Any | None
    dataset: str
    start: dt.date | None
    end: dt.date | None
    config: EvaluationConfig
    gate: GateConfig

    def versions(self) -> list[tuple[str, Any]]:
        """("candidate", version) first, then ("champion", version) when there is one."""
        return [("candidate", self.candidate)] + ([("champion", self.champion)] if self.champion else [])


def contest(settings: Settings, model: str, dataset: str = "sim", start: dt.date | None = None,
            end: dt.date | None = None, config: EvaluationConfig | None = None) -> Contest:  # fmt: skip
    """Look the model up and its ``candidate`` and ``champion`` versions.

    Raises:
        EvaluationError: the model has no ``candidate``.
    """
    entry, cfg = catalog_model(model), config or EvaluationConfig()
    client = registry_client(settings)
    candidate = version_by_alias(client, entry.registered_name, "candidate")
    if candidate is None:
        raise EvaluationError(f"{entry.registered_name} has no version with alias 'candidate': train it first "
                              "(coldstart train)")  # fmt: skip
    champion = version_by_alias(client, entry.registered_name, "champion")
    gate = GateConfig(**{**entry.family.gate, **cfg.gate})
    return Contest(settings, entry, client, candidate, champion, dataset, start, end, cfg, gate)


def evaluate_model(settings: Settings, model: str, dataset: str = "sim", start: dt.date | None = None,
                   end: dt.date | None = None, config: EvaluationConfig | None = None) -> dict:  # fmt: skip
    """Score ``candidate`` (and ``champion``) of ``model`` through its family's hook; report; gate."""
    from pipelines.evaluation.gate import decide

    game = contest(settings, model, dataset, start, end, config)
    scored = game.model.call("evaluate", game)
    if scored.get("reused"):
        return scored
    gate = decide(scored["slices"], scored["cold_slices"], game.gate, game.champion is not None)
    gate["champion_version"] = str(game.champion.version) if game.champion else None
    for name, coverage in gate["cold_coverage"].items():  # each cold slice says which of its checks ran
        scored["slices"].setdefault(name, {"count": 0, "tasks": {}})["checks"] = coverage
    result = {
        "model": game.model.name,
        "registered_model": game.model.registered_name,
        "candidate": {"version": str(game.candidate.version), "run_id": game.candidate.run_id},
        "champion": {"version": str(game.champion.version), "run_id": game.champion.run_id} if game.champion
        else None,
        **scored,
        "gate": gate,
    }  # fmt: skip
    return _record(game, result)


def _metric_key(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z_\-./ ]", "_", text)


def _slice_metrics(result: dict) -> dict[str, float]:
    """The candidate's point estimates as MLflow metrics, ``<task>_<metric>/<slice>``."""
    metrics = {}
    for slice_name, entry in result["slices"].items():
        for task, report in entry["tasks"].items():
            for metric, value in report["candidate"].items():
                if isinstance(value, dict) and value["value"] is not None:
                    metrics[_metric_key(f"{task}_{metric}/{slice_name}")] = value["value"]
    return metrics


def _record(game: Contest, result: dict) -> dict:
    """Write the report, log one MLflow run with it, and tag the model version with the gate's outcome."""
    import mlflow

    from pipelines.evaluation.report import write_report

    gate_cfg, gate = game.gate, result["gate"]
    out_dir = report_dir(game.settings, result["dataset"], result["model"], result["candidate"]["version"])
    name, version = result["registered_model"], result["candidate"]["version"]
    use_mlflow_experiment(game.settings, EVALUATION_EXPERIMENT)
    with mlflow.start_run(run_name=f"evaluate {result['model']} v{version}") as run:
        result["run_id"] = run.info.run_id
        paths = write_report(result, out_dir, game.model.family.primary,
                             (gate_cfg.overall_tolerance, gate_cfg.cold_tolerance))  # fmt: skip
        mlflow.log_params({"model": result["model"], "candidate_version": version,
                           "champion_version": (result["champion"] or {}).get("version"),
                           "dataset": result["dataset"], **{f"window.{k}": v for k, v in result["window"].items()},
                           "slices": result["slice_config"], "gate": gate_cfg.model_dump_json()})  # fmt: skip
        mlflow.log_metrics(_slice_metrics(result))
        mlflow.log_artifact(str(paths["json"]))
        mlflow.log_artifact(str(paths["html"]))
        mlflow.set_tags({"gate.passed": str(gate["passed"]).lower(), "gate.reasons": "; ".join(gate["reasons"])[:4900],
                         "model": result["model"], "candidate_version": version})  # fmt: skip
        mlflow.log_dict(gate, "gate.json")
    _tag_version(game.client, name, version, gate, run.info.run_id, result.get("evaluation_key"))
    result["report"] = {k: str(v) for k, v in paths.items()}
    return result


def _tag_version(client, name: str, version: str, gate: dict, run_id: str, key: str | None) -> None:
    """The gate's outcome on the model version; a pass moves ``approved`` to it."""
    client.set_model_version_tag(name, version, "gate", "passed" if gate["passed"] else "blocked")
    client.set_model_version_tag(name, version, "gate.evaluation_run", run_id)
    client.set_model_version_tag(name, version, "gate.reasons", "; ".join(gate["reasons"])[:4900] or "none")
    if key:
        client.set_model_version_tag(name, version, "gate.key", key)
    if gate["passed"]:
        client.set_registered_model_alias(name, APPROVED, version)


def evaluation_key(cfg: EvaluationConfig, gate_cfg: GateConfig, dataset: str, start: dt.date, end: dt.date,
                   champion, scoring: Any = None) -> str:  # fmt: skip
    """What identifies an evaluation: its config, gate, data window, the champion it was compared with and what
    the family scores with beyond the config (``scoring``, e.g. the serving policies the rankers resolve)."""
    parts = [cfg.model_dump(mode="json"), gate_cfg.model_dump(mode="json"), dataset, str(start), str(end),
             str(champion.version) if champion else None]  # fmt: skip
    if scoring is not None:
        parts.append(scoring)
    return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:12]


def report_dir(settings: Settings, dataset: str, model: str, version: str) -> Path:
    return settings.reports_dir / "evaluation" / dataset / model / f"v{version}"


def recorded_evaluation(game: Contest, key: str) -> dict | None:
    """The recorded outcome of an evaluation that need not run again, or None.

    It need not when the version was evaluated with the same key, or when it already is the champion (it was
    evaluated and promoted: comparing it with itself would say nothing). So re-running a finished day records
    no second evaluation.
    """
    candidate, champion = game.candidate, game.champion
    tags = candidate.tags or {}
    same = tags.get("gate.key") == key or (champion is not None and champion.version == candidate.version)
    out_dir = report_dir(game.settings, game.dataset, game.model.name, str(candidate.version))
    if "gate" not in tags or not same or not (out_dir / "evaluation.json").is_file():
        return None
    result = read_result(out_dir / "evaluation.json")
    result["report"] = {"json": str(out_dir / "evaluation.json"), "html": str(out_dir / "report.html")}
    result["reused"] = True
    return result


def evaluate_for_run(model: str, dataset: str, start: dt.date | None, end: dt.date | None, config: dict) -> dict:
    """What the DAG and the CLI call: settings from the environment, config from Params / options."""
    settings = get_settings()
    settings.ensure_home()
    result = evaluate_model(settings, model, dataset, start, end, EvaluationConfig(**config))
    return summary(result)


def summary(result: dict) -> dict:
    """The small, JSON-able outcome of an evaluation (what XCom and the CLI print)."""
    return {
        "model": result["model"],
        "version": result["candidate"]["version"],
        "champion_version": (result["champion"] or {}).get("version"),
        "passed": result["gate"]["passed"],
        "reasons": result["gate"]["reasons"],
        "run_id": result["run_id"],
        "report": result["report"]["html"],
        "window": result["window"],
        "reused": bool(result.get("reused")),
    }


def read_result(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def set_champion(settings: Settings, model: str, version: str | None = None) -> dict:
    """Point ``champion`` at ``version`` (default: the version the gate last ``approved``); returns old and new."""
    from mlflow.exceptions import MlflowException

    client, name = registry_client(settings), catalog_model(model).registered_name
    if version is None:
        approved = version_by_alias(client, name, APPROVED)
        if approved is None:
            raise EvaluationError(f"{name} has no `{APPROVED}` version: name one, or pass the gate first")
        version = str(approved.version)
    try:
        client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise EvaluationError(f"{name} has no version {version}") from exc
    previous = version_by_alias(client, name, "champion")
    client.set_registered_model_alias(name, "champion", str(version))
    return {"model": name, "champion": str(version), "previous": str(previous.version) if previous else None}
