"""Evaluate the registered ``candidate`` against the ``champion`` on held-out data, report, and gate.

Rankers (ESMM, PLE, ...) are scored on clean impressions of days *after* their training window (read from the
candidate run's ``lineage.end`` tag), joined point-in-time to their features through Feast, sliced by
cold-start segment. MeLU is scored on MovieLens-1M in MeLU's four scenarios (its split is chronological: new
users joined after the warm ones, new items were released later). Each evaluation is one MLflow run in the
experiment ``coldstart_evaluation`` holding the JSON and HTML report; the gate's outcome is set as tags on that
run and on the model version, and a pass points the alias ``approved`` at the version for the promote DAG.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from pipelines.data.contract import Store
from pipelines.evaluation.gate import GateConfig, decide
from pipelines.evaluation.metrics import WeightedRows, binary_report, oracle_gap, rating_report
from pipelines.evaluation.report import write_report
from pipelines.evaluation.slices import SliceConfig, annotate, cold_slices, slice_masks
from pipelines.settings import Settings, get_settings, use_mlflow_experiment

log = logging.getLogger(__name__)

MLFLOW_EXPERIMENT = "coldstart_evaluation"
APPROVED = "approved"
# The evaluation frame reads the widest feature service, so every ranker finds the columns it was trained on.
EVAL_SERVICE = "ple_uie_v1"
MELU_SCENARIOS = ("warm", "new_user", "new_item", "both_new")


class EvaluationError(RuntimeError):
    """The evaluation cannot run as asked (no candidate, no held-out day, overlapping window)."""


class EvaluationConfig(BaseModel):
    """Everything an evaluation can be told; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    slices: SliceConfig = Field(default_factory=SliceConfig)
    gate: dict = Field(default_factory=dict, description="Overrides of the model's default GateConfig.")
    n_bootstrap: int = Field(200, ge=0)
    seed: int = 0
    eval_days: int = Field(1, ge=1, description="Held-out days after the training window, when no window is given.")
    calibration_bins: int = Field(10, ge=2)
    max_users: int | None = Field(None, ge=1, description="MeLU: users per scenario (all by default).")
    tasks: tuple[str, ...] = ("ctr", "cvr", "ctcvr")


def registered_name(model: str) -> str:
    return f"coldstart_{model}"


def _client(settings: Settings):
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return mlflow.MlflowClient()


def _version(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


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


def _metric_key(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z_\-./ ]", "_", text)


def _record(settings: Settings, result: dict, gate_cfg: GateConfig, primary: tuple[str, str]) -> dict:
    """Write the report, log one MLflow run with it, and tag the model version with the gate's outcome."""
    import mlflow

    client = _client(settings)
    out_dir = report_dir(settings, result["dataset"], result["model"], result["candidate"]["version"])
    gate = result["gate"]
    use_mlflow_experiment(settings, MLFLOW_EXPERIMENT)
    name, version = result["registered_model"], result["candidate"]["version"]
    with mlflow.start_run(run_name=f"evaluate {result['model']} v{version}") as run:
        result["run_id"] = run.info.run_id
        paths = write_report(result, out_dir, primary, (gate_cfg.overall_tolerance, gate_cfg.cold_tolerance))
        mlflow.log_params({"model": result["model"], "candidate_version": version,
                           "champion_version": (result["champion"] or {}).get("version"),
                           "dataset": result["dataset"], **{f"window.{k}": v for k, v in result["window"].items()},
                           "slices": result["slice_config"], "gate": gate_cfg.model_dump_json()})  # fmt: skip
        metrics = {}
        for slice_name, entry in result["slices"].items():
            for task, report in entry["tasks"].items():
                for metric, value in report["candidate"].items():
                    if isinstance(value, dict) and value["value"] is not None:
                        metrics[_metric_key(f"{task}_{metric}/{slice_name}")] = value["value"]
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(paths["json"]))
        mlflow.log_artifact(str(paths["html"]))
        mlflow.set_tags({"gate.passed": str(gate["passed"]).lower(), "gate.reasons": "; ".join(gate["reasons"])[:4900],
                         "model": result["model"], "candidate_version": version})  # fmt: skip
        mlflow.log_dict(gate, "gate.json")
    client.set_model_version_tag(name, version, "gate", "passed" if gate["passed"] else "blocked")
    client.set_model_version_tag(name, version, "gate.evaluation_run", run.info.run_id)
    client.set_model_version_tag(name, version, "gate.reasons", "; ".join(gate["reasons"])[:4900] or "none")
    if result.get("evaluation_key"):
        client.set_model_version_tag(name, version, "gate.key", result["evaluation_key"])
    if gate["passed"]:
        client.set_registered_model_alias(name, APPROVED, version)
    result["report"] = {k: str(v) for k, v in paths.items()}
    return result


def evaluate_ranker(
    settings: Settings,
    model: str,
    dataset: str = "sim",
    start: dt.date | None = None,
    end: dt.date | None = None,
    config: EvaluationConfig | None = None,
) -> dict:
    """Score ``candidate`` (and ``champion``) of ``coldstart_<model>`` on held-out days; report; gate."""
    from pipelines.features.store import get_store
    from pipelines.features.training_set import build_training_set

    cfg = config or EvaluationConfig()
    gate_cfg = GateConfig.for_model(model, **cfg.gate)
    client, name = _client(settings), registered_name(model)
    candidate = _version(client, name, "candidate")
    if candidate is None:
        raise EvaluationError(f"{name} has no version with alias 'candidate': train it first (coldstart train)")
    champion = _version(client, name, "champion")
    tags = client.get_run(candidate.run_id).data.tags
    train_end = dt.date.fromisoformat(tags["lineage.end"]) if "lineage.end" in tags else None
    data = Store(settings.data_dir, dataset)
    start, end = held_out_window(data, train_end, start, end, cfg.eval_days)
    key = evaluation_key(cfg, gate_cfg, dataset, start, end, champion)
    recorded = recorded_evaluation(settings, model, dataset, candidate, champion, key)
    if recorded is not None:
        log.info("%s v%s was evaluated with key %s: its recorded outcome stands", name, candidate.version, key)
        return recorded
    log.info("evaluating %s v%s on %s %s..%s", name, candidate.version, dataset, start, end)
    frame = build_training_set(get_store(settings, dataset), data, start, end, EVAL_SERVICE)
    users = data.read_range("users", end=end, layer="clean", columns=["user_id", "signup_time"]).to_pandas()
    items = data.read_range("items", end=end, layer="clean", columns=["item_id", "publish_time"]).to_pandas()
    frame = annotate(frame, users, items)
    truth = _truth(data, start, end)
    if truth is not None:
        frame = frame.merge(truth, on=["request_id", "position"], how="left")
        frame["true_ctr"], frame["true_cvr"] = frame.pop("p_click"), frame.pop("p_conversion_given_click")
        frame["true_ctcvr"] = frame["true_ctr"] * frame["true_cvr"]
    scores = {"candidate": _predict(f"models:/{name}/{candidate.version}", frame)}
    if champion is not None:
        scores["champion"] = _predict(f"models:/{name}/{champion.version}", frame)
    slices = score_slices(frame, scores, cfg)
    cold = cold_slices(list(slices), cfg.slices)
    gate = decide(slices, cold, gate_cfg, champion is not None)
    gate["champion_version"] = str(champion.version) if champion else None
    result = {
        "model": model,
        "registered_model": name,
        "dataset": dataset,
        "window": {"start": start.isoformat(), "end": end.isoformat(), "train_end": str(train_end)},
        "rows": int(len(frame)),
        "candidate": {"version": str(candidate.version), "run_id": candidate.run_id},
        "champion": {"version": str(champion.version), "run_id": champion.run_id} if champion else None,
        "slice_config": cfg.slices.model_dump(mode="json"),
        "cold_slices": cold,
        "has_truth": truth is not None,
        "slices": slices,
        "calibration": calibration_curves(frame, scores, cfg, ["overall", *[c for c in cold if "&" in c]]),
        "gate": gate,
        "evaluation_key": key,
    }
    return _record(settings, result, gate_cfg, ("ctr", "auc"))


def evaluation_key(cfg: EvaluationConfig, gate_cfg: GateConfig, dataset: str, start: dt.date, end: dt.date,
                   champion) -> str:  # fmt: skip
    """What identifies an evaluation: its config, gate, data window and the champion it was compared with."""
    import hashlib
    import json

    parts = [cfg.model_dump(mode="json"), gate_cfg.model_dump(mode="json"), dataset, str(start), str(end),
             str(champion.version) if champion else None]  # fmt: skip
    return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:12]


def report_dir(settings: Settings, dataset: str, model: str, version: str) -> Path:
    return settings.home / "reports" / "evaluation" / dataset / model / f"v{version}"


def recorded_evaluation(settings: Settings, model: str, dataset: str, candidate, champion, key: str) -> dict | None:
    """The recorded outcome of an evaluation that need not run again, or None.

    It need not when the version was evaluated with the same key, or when it already is the champion (it was
    evaluated and promoted: comparing it with itself would say nothing). So re-running a finished day records
    no second evaluation.
    """
    tags = candidate.tags or {}
    same = tags.get("gate.key") == key or (champion is not None and champion.version == candidate.version)
    out_dir = report_dir(settings, dataset, model, str(candidate.version))
    if "gate" not in tags or not same or not (out_dir / "evaluation.json").is_file():
        return None
    result = read_result(out_dir / "evaluation.json")
    result["report"] = {"json": str(out_dir / "evaluation.json"), "html": str(out_dir / "report.html")}
    result["reused"] = True
    return result


def evaluate_melu(settings: Settings, config: EvaluationConfig | None = None) -> dict:
    """MeLU's candidate (and champion) on MovieLens-1M: adapt on each user's support set, score the query set."""
    import mlflow

    from pipelines.data.movielens import DATASET
    from pipelines.training.meta import REGISTERED as name
    from pipelines.training.meta import load_rows, tasks_of

    cfg = config or EvaluationConfig()
    gate_cfg = GateConfig.for_model("melu", **cfg.gate)
    client = _client(settings)
    candidate = _version(client, name, "candidate")
    if candidate is None:
        raise EvaluationError(f"{name} has no version with alias 'candidate': train it first (coldstart train)")
    champion = _version(client, name, "champion")
    rows = load_rows(settings.data_dir)
    models = {"candidate": mlflow.pyfunc.load_model(f"models:/{name}/{candidate.version}").unwrap_python_model()}
    if champion is not None:
        models["champion"] = mlflow.pyfunc.load_model(f"models:/{name}/{champion.version}").unwrap_python_model()
    per_scenario: dict[str, list] = {}
    by_model = {who: tasks_of(rows, m.encoder) for who, m in models.items()}
    for scenario in MELU_SCENARIOS:
        tasks = {who: t.get(scenario, [])[: cfg.max_users] for who, t in by_model.items()}
        per_scenario[scenario] = [
            (query["rating"].numpy(), {who: models[who].model.predict(*tasks[who][i]).numpy() for who in models})
            for i, (_, query) in enumerate(tasks["candidate"])
        ]
    slices = {"overall": [t for s in MELU_SCENARIOS for t in per_scenario[s]], **per_scenario}
    results = {}
    for slice_name, tasks in slices.items():
        if not tasks:
            continue
        report = rating_report(tasks, (1, 3), cfg.n_bootstrap, cfg.seed)
        report["count"] = report["ratings"]
        results[slice_name] = {"count": report["ratings"], "users": report["users"], "tasks": {"rating": report}}
    cold = [s for s in MELU_SCENARIOS[1:] if s in results]
    gate = decide(results, cold, gate_cfg, champion is not None)
    gate["champion_version"] = str(champion.version) if champion else None
    result = {
        "model": "melu",
        "registered_model": name,
        "dataset": DATASET,
        "window": {"split": "melu", "scenarios": ",".join(MELU_SCENARIOS)},
        "rows": int(sum(r["count"] for n, r in results.items() if n != "overall")),
        "candidate": {"version": str(candidate.version), "run_id": candidate.run_id},
        "champion": {"version": str(champion.version), "run_id": champion.run_id} if champion else None,
        "slice_config": {"scenarios": list(MELU_SCENARIOS), "max_users": cfg.max_users},
        "cold_slices": cold,
        "has_truth": False,
        "slices": results,
        "note": "warm = MeLU's meta-training users (adapted on their support sets); the other scenarios are unseen.",
        "gate": gate,
    }
    return _record(settings, result, gate_cfg, ("rating", "mae"))


def evaluate_model(settings: Settings, model: str, dataset: str = "sim", start: dt.date | None = None,
                   end: dt.date | None = None, config: EvaluationConfig | None = None) -> dict:  # fmt: skip
    if model == "melu":
        return evaluate_melu(settings, config)
    return evaluate_ranker(settings, model, dataset, start, end, config)


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
    import json

    return json.loads(Path(path).read_text())


def set_champion(settings: Settings, model: str, version: str | None = None) -> dict:
    """Point ``champion`` at ``version`` (default: the version the gate last ``approved``); returns old and new."""
    client, name = _client(settings), registered_name(model)
    if version is None:
        approved = _version(client, name, APPROVED)
        if approved is None:
            raise EvaluationError(f"{name} has no `{APPROVED}` version: name one, or pass the gate first")
        version = str(approved.version)
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise EvaluationError(f"{name} has no version {version}") from exc
    previous = _version(client, name, "champion")
    client.set_registered_model_alias(name, "champion", str(version))
    return {"model": name, "champion": str(version), "previous": str(previous.version) if previous else None}
