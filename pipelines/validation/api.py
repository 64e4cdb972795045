"""Entry points shared by the DAG and the CLI: validate a day under the current settings."""

from __future__ import annotations

import datetime as dt

from pipelines.data.contract import Store
from pipelines.settings import get_settings
from pipelines.validation.validate import QuarantineThresholdError, read_summary, validate_day


def validate_for_run(dataset: str, day: dt.date, threshold: float) -> dict:
    """Validate ``day`` of ``dataset``; return its summary even when the quarantined share is too high.

    Table-level failures (schema drift, missing or empty partitions) still raise.
    """
    settings = get_settings()
    settings.ensure_home()
    reports = settings.reports_dir
    try:
        return validate_day(Store(settings.data_dir, dataset), day, reports, threshold=threshold)
    except QuarantineThresholdError:
        return read_summary(reports, dataset, day)


def enforce_threshold(summary: dict) -> None:
    """Raise :class:`QuarantineThresholdError` when the summary did not pass its threshold."""
    if not summary["passed"]:
        raise QuarantineThresholdError(
            f"{summary['dataset']} {summary['date']}: {summary['quarantined']:,} of {summary['rows_in']:,} rows "
            f"quarantined ({summary['quarantined_share']:.2%}) exceeds the threshold {summary['threshold']:.2%}"
        )
