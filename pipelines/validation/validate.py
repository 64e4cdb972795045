"""Validate one day of raw event logs: every row ends in ``clean/`` or ``quarantine/`` (with the rules it broke).

Per table, in dependency order (:data:`~pipelines.validation.quarantine_rules.VALIDATED_TABLES`):

1. table-level checks that fail the task: a missing partition, an empty impressions partition, schema drift
   (a missing or unexpected column, or a column type that is neither the contract's nor parseable text);
2. computed helpers over the whole partition (duplicate keys, references to clean users / items, text that
   did not parse as its contract type, one-row funnel rules);
3. the GX suite, run on chunks of ``chunk_rows`` rows with ``COMPLETE`` results, which name each failing row;
4. clean rows are written (contract schema) to ``clean/``, the rest with ``failed_rules`` and ``source_row``
   to ``quarantine/``; rows in = clean + quarantined is asserted before anything is written.

A JSON summary (rows failed per rule) is written to ``<home>/reports/validation/<dataset>/<date>.json`` and
GX Data Docs that read offline to the folder ``<date>/`` beside it (see :mod:`pipelines.validation.docs`).
A quarantined share above ``threshold`` raises :class:`QuarantineThresholdError` after both outputs and the
summary are written.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.data.contract import (
    MissingPartitionError,
    Store,
    TableSpec,
    conform,
    table_spec,
    write_file,
)
from pipelines.validation.quarantine_rules import (
    REFERENCES,
    ROW,
    SUITE_VERSION,
    VALIDATED_TABLES,
    Reference,
    build_suite,
    helper_column,
    row_helpers,
    type_rule,
    unique_rule,
)

log = logging.getLogger(__name__)

NON_EMPTY = {"impressions"}


class ValidationError(RuntimeError):
    """A table-level failure: the day cannot be validated at all."""


class SchemaDriftError(ValidationError):
    """The raw partition's columns or types do not match the contract."""


class QuarantineThresholdError(ValidationError):
    """Too large a share of the day's rows was quarantined (both outputs were still written)."""


@dataclass
class TableResult:
    """What happened to one table's partition."""

    table: str
    rows_in: int
    clean: int
    quarantined: int
    failed_by_rule: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _parse_text(column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    """Parse text into ``target`` row by row; unparseable values become null."""
    text = column.to_pandas()
    if pa.types.is_timestamp(target):
        parsed = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
        return pa.chunked_array([pa.array(parsed, type=target, from_pandas=True)])
    numeric = pd.to_numeric(text, errors="coerce")
    if pa.types.is_integer(target):
        fits = numeric.notna() & (numeric == np.round(numeric))
        numeric = numeric.where(fits)
        return pa.chunked_array([pa.array(numeric.astype("Int64"), from_pandas=True).cast(target, safe=False)])
    return pa.chunked_array([pa.array(numeric, type=target, from_pandas=True)])


def _check_schema(spec: TableSpec, raw: pa.Table) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """Return the raw table with contract types and, for text columns that were parsed, a row mask of success.

    Raises:
        SchemaDriftError: on missing or extra columns, or a type that cannot be parsed row by row.
    """
    have, want = set(raw.column_names), set(spec.schema.names)
    problems = []
    if missing := sorted(want - have):
        problems.append(f"missing columns {missing}")
    if extra := sorted(have - want):
        problems.append(f"unexpected columns {extra}")
    parsed_ok: dict[str, np.ndarray] = {}
    columns = []
    for fld in spec.schema:
        if fld.name not in have:
            continue
        column = raw.column(fld.name)
        if column.type.equals(fld.type):
            columns.append(column)
            continue
        is_text = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
        if is_text and (
            pa.types.is_integer(fld.type) or pa.types.is_floating(fld.type) or pa.types.is_timestamp(fld.type)
        ):
            parsed = _parse_text(column, fld.type)
            parsed_ok[fld.name] = ~(np.asarray(column.is_valid()) & ~np.asarray(parsed.is_valid()))
            columns.append(parsed)
            continue
        try:
            columns.append(column.cast(fld.type, safe=True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            problems.append(f"column {fld.name!r} is {column.type}, the contract says {fld.type}")
    if problems:
        raise SchemaDriftError(f"{spec.name}: schema drift: " + "; ".join(problems))
    schema = pa.schema([f.with_nullable(True) for f in spec.schema])
    return pa.Table.from_arrays(columns, schema=schema), parsed_ok


def known_ids(store: Store, ref: Reference, day: dt.date) -> np.ndarray:
    """Ids in the clean partitions of ``ref.table`` up to and including ``day``.

    Raises:
        MissingPartitionError: when an earlier raw day of that table has not been validated yet.
    """
    raw_days = [d for d in store.partitions(ref.table) if d <= day]
    clean_days = set(store.partitions(ref.table, "clean"))
    if missing := [d for d in raw_days if d not in clean_days]:
        raise MissingPartitionError(
            f"{ref.table} has raw partitions that were never validated ({missing[0]}..{missing[-1]}, "
            f"{len(missing)} days): validate earlier days first (references are checked against clean rows)"
        )
    ids = [store.read(ref.table, d, "clean", [ref.target_column]).column(0) for d in sorted(clean_days) if d <= day]
    return pa.chunked_array(ids, type=pa.int64()).to_numpy() if ids else np.array([], dtype=np.int64)


class _Engine:
    """One ephemeral GX context with a pandas datasource; suites are registered once per table and day."""

    def __init__(self) -> None:
        import great_expectations as gx

        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        self.gx = gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        # The ephemeral context makes a default docs site in a fresh temp folder; we build our own instead.
        for name, site in dict(self.context.variables.data_docs_sites or {}).items():
            self.context.delete_data_docs_site(name)
            base = site.get("store_backend", {}).get("base_directory")
            if base and Path(base).is_dir() and Path(base).parent == Path(tempfile.gettempdir()):
                shutil.rmtree(base, ignore_errors=True)
        self.source = self.context.data_sources.add_pandas("raw_logs")
        self.results: list = []

    def run(self, table: str, suite, chunks: list[pd.DataFrame]) -> dict[str, np.ndarray]:
        """Run ``suite`` on each chunk; return rule -> sorted unique failing ``_row`` values."""
        gx = self.gx
        name = f"{table}_{len(self.results)}"
        asset = self.source.add_dataframe_asset(name)
        batch = asset.add_batch_definition_whole_dataframe(name)
        suite = self.context.suites.add(suite)
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )
        failed: dict[str, list[np.ndarray]] = {}
        result_format = {"result_format": "COMPLETE", "unexpected_index_column_names": [ROW]}
        for chunk in chunks:
            outcome = definition.run(batch_parameters={"dataframe": chunk}, result_format=result_format)
            self.results.append(outcome)
            for result in outcome.results:
                rule = result.expectation_config.meta["rule"]
                if result.exception_info.get("raised_exception"):
                    raise ValidationError(
                        f"{table}: rule {rule} could not run: {result.exception_info['exception_message']}"
                    )
                if not result.success:
                    rows = [entry[ROW] for entry in result.result.get("unexpected_index_list") or []]
                    failed.setdefault(rule, []).append(np.asarray(rows, dtype=np.int64))
        return {rule: np.unique(np.concatenate(parts)) for rule, parts in failed.items()}


def _vectorizable_ranges(frame: pd.DataFrame, suite) -> None:
    """Give the numeric columns of range rules float64 dtype, which GX compares vectorized.

    GX's ``ExpectColumnValuesToBeBetween`` on pandas compares int64 and float64 columns as arrays, but any other
    numeric dtype (nullable Int16, float32) one value at a time through a Python function: 20M calls, about
    a seventh of validating a 10M-impression week. float64 holds every int16/int32 and float32 value exactly,
    and a null stays a null (NaN), so every rule sees the same rows; only the frame handed to GX changes (the
    clean and quarantine outputs are taken from the Arrow table).
    """
    import great_expectations.expectations as gxe

    for expectation in suite.expectations:
        if not isinstance(expectation, gxe.ExpectColumnValuesToBeBetween):
            continue
        column = frame[expectation.column]
        dtype = column.dtype
        if dtype in (np.float64, np.int64) or pd.api.types.is_bool_dtype(dtype):
            continue
        if pd.api.types.is_float_dtype(dtype) or (pd.api.types.is_integer_dtype(dtype) and dtype.itemsize <= 4):
            frame[expectation.column] = column.astype(np.float64)  # exact, nulls become NaN
        elif pd.api.types.is_integer_dtype(dtype) and not column.hasnans:
            frame[expectation.column] = column.astype(np.int64)  # a nullable Int64 without nulls


def _add_helper_columns(
    store: Store, spec: TableSpec, day: dt.date, frame: pd.DataFrame, parsed_ok: dict[str, np.ndarray]
) -> None:
    """Add the row number and the computed rules' boolean columns (see :mod:`.quarantine_rules`) to ``frame``."""
    frame[ROW] = np.arange(len(frame), dtype=np.int64)
    for column, ok in parsed_ok.items():
        frame[helper_column(type_rule(spec, column))] = ok
    frame[helper_column(unique_rule(spec))] = ~frame.duplicated(list(spec.key), keep="first").to_numpy()
    for ref in REFERENCES.get(spec.name, ()):
        values = frame[ref.column]
        frame[helper_column(ref.rule)] = (values.isna() | values.isin(known_ids(store, ref, day))).to_numpy(bool)
    for rule, check in row_helpers(spec.name).items():
        frame[helper_column(rule)] = check(frame).fillna(True).to_numpy(bool)


def _quarantine_table(raw: pa.Table, bad_rows: np.ndarray, failed: dict[str, np.ndarray]) -> pa.Table:
    """The raw rows ``bad_rows`` with the rules each broke (``failed_rules``, sorted) and its ``source_row``."""
    rules_by_row: dict[int, list[str]] = {}
    for rule in sorted(failed):
        for row in failed[rule]:
            rules_by_row.setdefault(int(row), []).append(rule)
    quarantine = raw.take(bad_rows).append_column(
        "failed_rules", pa.array([rules_by_row[int(r)] for r in bad_rows], pa.list_(pa.string()))
    )
    return quarantine.append_column("source_row", pa.array(bad_rows, pa.int64()))


def validate_table(store: Store, table: str, day: dt.date, engine: _Engine, chunk_rows: int = 1_000_000) -> TableResult:
    """Validate one table's raw partition for ``day`` and write its clean and quarantine outputs."""
    started = time.perf_counter()
    spec = table_spec(table)
    path = store.partition_path(table, day)
    if not path.is_file():
        store.read(table, day)  # raises MissingPartitionError with what exists
    raw = pq.read_table(path)
    if raw.num_rows == 0 and table in NON_EMPTY:
        raise ValidationError(f"{table}: the raw partition for {day} is empty ({path})")
    typed, parsed_ok = _check_schema(spec, raw)
    n = typed.num_rows
    frame = typed.to_pandas(
        types_mapper={pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int64(): pd.Int64Dtype()}.get
    )
    _add_helper_columns(store, spec, day, frame, parsed_ok)
    suite = build_suite(table, day, tuple(parsed_ok))
    _vectorizable_ranges(frame, suite)
    chunks = [frame.iloc[i : i + chunk_rows] for i in range(0, n, chunk_rows)] or [frame]
    failed = engine.run(table, suite, chunks)
    for column in parsed_ok:
        # Text that did not parse is null after parsing: report it as a type error, not also as a null.
        type_failed = failed.get(type_rule(spec, column))
        null_rule = f"{table}_{column}_not_null"
        if type_failed is not None and null_rule in failed:
            failed[null_rule] = np.setdiff1d(failed[null_rule], type_failed)
            if not len(failed[null_rule]):
                del failed[null_rule]
    # Route every row: quarantined if it broke any rule.
    bad = np.zeros(n, dtype=bool)
    for rows in failed.values():
        bad[rows] = True
    clean_rows = np.flatnonzero(~bad)
    bad_rows = np.flatnonzero(bad)
    assert len(clean_rows) + len(bad_rows) == n == raw.num_rows, "rows in != clean + quarantined"
    clean = conform(spec, typed.take(clean_rows))
    quarantine = _quarantine_table(raw, bad_rows, failed)
    store.write(table, day, clean, layer="clean")
    write_file(store.partition_path(table, day, "quarantine"), quarantine)
    return TableResult(
        table=table,
        rows_in=n,
        clean=clean.num_rows,
        quarantined=quarantine.num_rows,
        failed_by_rule={rule: len(rows) for rule, rows in sorted(failed.items())},
        seconds=time.perf_counter() - started,
    )


def summary_path(reports_dir: Path, dataset: str, day: dt.date) -> Path:
    return reports_dir / "validation" / dataset / f"{day.isoformat()}.json"


def validate_day(
    store: Store,
    day: dt.date,
    reports_dir: Path,
    threshold: float = 0.05,
    chunk_rows: int = 1_000_000,
    tables: tuple[str, ...] = VALIDATED_TABLES,
    docs: bool = True,
) -> dict:
    """Validate every table of one day; write clean, quarantine and the JSON summary.

    Returns:
        The summary (also written to :func:`summary_path`).

    Raises:
        ValidationError: a table-level failure (nothing for that table is written), or
            :class:`QuarantineThresholdError` after all outputs are written.
    """
    engine = _Engine()
    results = [validate_table(store, table, day, engine, chunk_rows) for table in tables]
    rows_in = sum(r.rows_in for r in results)
    quarantined = sum(r.quarantined for r in results)
    share = quarantined / rows_in if rows_in else 0.0
    summary = {
        "dataset": store.dataset,
        "date": day.isoformat(),
        "suite_version": SUITE_VERSION,
        "threshold": threshold,
        "rows_in": rows_in,
        "clean": sum(r.clean for r in results),
        "quarantined": quarantined,
        "quarantined_share": share,
        "passed": share <= threshold,
        "tables": {r.table: {k: v for k, v in vars(r).items() if k != "table"} for r in results},
    }
    out = summary_path(reports_dir, store.dataset, day)
    out.parent.mkdir(parents=True, exist_ok=True)
    if docs:
        from pipelines.validation.docs import build_offline_docs

        summary["docs"] = str(build_offline_docs(engine.context, out.with_suffix(""), summary))
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(out)
    log.info("validated %s %s: %d rows, %d quarantined (%.4f)", store.dataset, day, rows_in, quarantined, share)
    if share > threshold:
        raise QuarantineThresholdError(
            f"{store.dataset} {day}: {quarantined:,} of {rows_in:,} rows quarantined ({share:.2%}) "
            f"exceeds the threshold {threshold:.2%}; outputs written, see {out}"
        )
    return summary


def read_summary(reports_dir: Path, dataset: str, day: dt.date) -> dict:
    """Read a day's validation summary (as later tasks and the CLI do)."""
    path = summary_path(reports_dir, dataset, day)
    if not path.is_file():
        raise MissingPartitionError(f"No validation summary for {dataset} {day} at {path}: validate that day first")
    return json.loads(path.read_text())
