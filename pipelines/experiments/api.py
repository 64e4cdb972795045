"""Entry point shared by the coldstart_ab_metrics DAG and the CLI: read out, report, log to MLflow."""

from __future__ import annotations

import datetime as dt

from pipelines.data.contract import Store
from pipelines.experiments.config import ReadoutConfig
from pipelines.experiments.readout import readout
from pipelines.experiments.report import write_report
from pipelines.settings import get_settings, use_mlflow_experiment

MLFLOW_EXPERIMENT = "coldstart_ab_metrics"


def readout_for_run(
    dataset: str, start: dt.date, end: dt.date, cfg: ReadoutConfig, treatment_share: float = 0.5
) -> dict:
    """Read out the experiment, write its report under ``<home>/reports/ab/...`` and log an MLflow run."""
    import mlflow

    settings = get_settings()
    settings.ensure_home()
    result = readout(Store(settings.data_dir, dataset), start, end, cfg, treatment_share)
    out_dir = settings.reports_dir / "ab" / dataset / cfg.experiment_id / f"{start}_{end}"
    paths = write_report(result, out_dir)
    use_mlflow_experiment(settings, MLFLOW_EXPERIMENT)
    with mlflow.start_run(run_name=f"{cfg.experiment_id} {start}..{end}") as run:
        mlflow.log_params(
            {"dataset": dataset, "start": start, "end": end, "design": result["design"], **cfg.model_dump(mode="json")}
        )
        mlflow.set_tags({"experiment_id": cfg.experiment_id, "srm": str(result["srm"]["mismatch"]).lower(),
                         "correction": cfg.correction, "primary": ",".join(cfg.primary)})  # fmt: skip
        for name, metric in result["metrics"].items():
            for key in ("rel_diff", "p_value", "p_adjusted", "control", "treatment"):
                value = metric[key]
                if value == value:  # not NaN
                    mlflow.log_metric(f"{name}.{key}", value)
        for path in paths.values():
            mlflow.log_artifact(str(path))
        result["mlflow_run_id"] = run.info.run_id
    result["report"] = str(paths["html"])
    return result
