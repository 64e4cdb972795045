"""validate_logs: each injected defect, and only it, is quarantined under its rule; counts always balance."""

import datetime as dt
import json
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.data.contract import MissingPartitionError, Store
from pipelines.validation.corrupt import ROW_DEFECTS, corrupt_impressions, drift_schema
from pipelines.validation.validate import (
    QuarantineThresholdError,
    SchemaDriftError,
    ValidationError,
    read_summary,
    validate_day,
)

from ..conftest import run_sim

DAY = dt.date(2026, 1, 1)
PER_DEFECT = 7


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("validation_sim")
    run_sim(root, days=2, users=1500, seed=3)
    return root


@pytest.fixture
def store(pristine: Path, tmp_path: Path) -> Store:
    shutil.copytree(pristine, tmp_path / "data")
    return Store(tmp_path / "data", "sim")


def test_clean_simulated_logs_pass_untouched(store: Store, tmp_path: Path) -> None:
    summary = validate_day(store, DAY, tmp_path / "reports")
    assert summary["quarantined"] == 0 and summary["passed"]
    for table, result in summary["tables"].items():
        assert result["clean"] == result["rows_in"] == store.read(table, DAY).num_rows
        assert store.read(table, DAY, "clean").equals(store.read(table, DAY))
    assert read_summary(tmp_path / "reports", "sim", DAY) == json.loads(json.dumps(summary))


def test_each_defect_lands_in_quarantine_under_its_rule(store: Store, tmp_path: Path) -> None:
    injected = corrupt_impressions(store, DAY, per_defect=PER_DEFECT)
    rows_in = pq.read_metadata(store.partition_path("impressions", DAY)).num_rows
    summary = validate_day(store, DAY, tmp_path / "reports", threshold=0.5)
    result = summary["tables"]["impressions"]
    assert result["rows_in"] == rows_in
    assert result["clean"] + result["quarantined"] == rows_in
    assert result["quarantined"] == PER_DEFECT * len(ROW_DEFECTS)
    quarantine = pq.read_table(store.partition_path("impressions", DAY, "quarantine")).to_pandas()
    by_row = dict(zip(quarantine["source_row"], quarantine["failed_rules"].map(list), strict=True))
    for defect, (rule, rows) in injected.items():
        assert result["failed_by_rule"][rule] == PER_DEFECT, defect
        for row in rows:
            assert by_row[row] == [rule], (defect, row, by_row.get(row))
    # Clean rows are contract-typed and none of the injected rows got through.
    clean = store.read("impressions", DAY, "clean")
    assert clean.num_rows == rows_in - len(by_row)
    assert (clean.column("position").to_numpy() >= 0).all()


def test_rerun_replaces_outputs(store: Store, tmp_path: Path) -> None:
    corrupt_impressions(store, DAY, per_defect=3)
    validate_day(store, DAY, tmp_path / "reports", threshold=0.5)
    quarantine_path = store.partition_path("impressions", DAY, "quarantine")
    first = (quarantine_path.read_bytes(), store.partition_path("impressions", DAY, "clean").read_bytes())
    validate_day(store, DAY, tmp_path / "reports", threshold=0.5)
    assert (quarantine_path.read_bytes(), store.partition_path("impressions", DAY, "clean").read_bytes()) == first
    # Fixing the raw partition and re-running empties the quarantine.
    store.write("impressions", DAY, store.read("impressions", DAY, "clean"))
    summary = validate_day(store, DAY, tmp_path / "reports")
    assert summary["quarantined"] == 0
    assert pq.read_metadata(quarantine_path).num_rows == 0


@pytest.mark.parametrize("defect", ["extra_column", "missing_column"])
def test_schema_drift_fails_clearly_and_writes_nothing(store: Store, tmp_path: Path, defect: str) -> None:
    drift_schema(store, "impressions", DAY, defect)
    with pytest.raises(
        SchemaDriftError, match=r"impressions: schema drift: (unexpected columns \['debug_flag'\]|missing columns)"
    ):
        validate_day(store, DAY, tmp_path / "reports")
    assert store.partitions("impressions", "clean") == []
    assert store.partitions("impressions", "quarantine") == []


def test_missing_or_empty_partition_fails(store: Store, tmp_path: Path) -> None:
    with pytest.raises(MissingPartitionError, match="2026-02-01"):
        validate_day(store, dt.date(2026, 2, 1), tmp_path / "reports")
    store.write("impressions", DAY, store.read("impressions", DAY).slice(0, 0))
    with pytest.raises(ValidationError, match="empty"):
        validate_day(store, DAY, tmp_path / "reports")


def test_references_need_earlier_days_validated(store: Store, tmp_path: Path) -> None:
    with pytest.raises(MissingPartitionError, match="validate earlier days first"):
        validate_day(store, DAY + dt.timedelta(days=1), tmp_path / "reports")
    validate_day(store, DAY, tmp_path / "reports")
    assert validate_day(store, DAY + dt.timedelta(days=1), tmp_path / "reports")["quarantined"] == 0


def test_threshold_fails_after_writing_both_outputs(store: Store, tmp_path: Path) -> None:
    corrupt_impressions(store, DAY, per_defect=PER_DEFECT)
    with pytest.raises(QuarantineThresholdError, match="exceeds the threshold"):
        validate_day(store, DAY, tmp_path / "reports", threshold=0.0001)
    assert store.partitions("impressions", "clean") == [DAY]
    assert store.partitions("impressions", "quarantine") == [DAY]
    assert read_summary(tmp_path / "reports", "sim", DAY)["passed"] is False


def test_data_docs_read_offline(store: Store, tmp_path: Path) -> None:
    from pipelines.validation.docs import remote_assets

    corrupt_impressions(store, DAY, per_defect=2)
    summary = validate_day(store, DAY, tmp_path / "reports", threshold=0.5)
    index = Path(summary["docs"])
    docs = index.parent
    pages = list(docs.rglob("*.html"))
    assert len(pages) >= 1 + 2 * 5, "an index, and a suite page and a result page per table"
    for page in pages:
        assert remote_assets(page) == [], page
    text = index.read_text()
    for table in ("users", "items", "publishes", "assignments", "impressions"):
        assert f"<td>{table}</td>" in text
    assert "impressions_conversion_needs_click: 2" in text
    for href in re.findall(r'href="([^"#]+)"', text):
        assert (docs / href).is_file(), href
    page = next(docs.glob("validations/**/*.html"))
    css = re.search(r'href="([^"]+bootstrap\.min\.css)"', page.read_text())
    assert css and (page.parent / css.group(1)).resolve().is_file()


def test_range_rule_columns_reach_gx_as_exact_float64_or_int64() -> None:
    """GX checks ranges vectorized only on float64/int64 columns; the conversion keeps every value and null."""
    import datetime as dt

    import great_expectations as gx
    import great_expectations.expectations as gxe
    import numpy as np
    import pandas as pd

    from pipelines.validation.validate import _vectorizable_ranges

    frame = pd.DataFrame(
        {
            "small": pd.array([-32768, None, 32767], dtype="Int16"),
            "real": np.array([0.1, np.nan, -2.5], dtype=np.float32),
            "big": pd.array([2**62, 1, 2], dtype="Int64"),
            "big_null": pd.array([2**62, None, 2], dtype="Int64"),
            "when": pd.to_datetime(["2026-01-01"] * 3, utc=True),
        }
    )
    suite = gx.ExpectationSuite(name="ranges")
    for column in frame:
        bound = pd.Timestamp(dt.datetime(2026, 1, 2), tz="UTC") if column == "when" else 0
        suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=column, max_value=bound))
    before = frame.copy()
    _vectorizable_ranges(frame, suite)
    assert frame.dtypes.astype(str).to_dict() == {"small": "float64", "real": "float64", "big": "int64",
                                                  "big_null": "Int64", "when": "datetime64[ns, UTC]"}  # fmt: skip
    for column in frame:
        assert frame[column].isna().tolist() == before[column].isna().tolist()
        kept = before[column].notna().to_numpy()
        assert (frame[column][kept].astype(object) == before[column][kept].astype(object)).all(), column
