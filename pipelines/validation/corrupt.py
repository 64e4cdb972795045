"""Inject known defects into a raw partition, at known rows, so validation can be tested exactly.

Row defects are injected into disjoint rows (each breaks exactly one rule) and reported as
``{defect: (rule, row numbers in the corrupted partition)}``. Table defects (an extra or a missing column)
make the whole partition drift from the contract.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.data.contract import Store, write_file

# defect -> rule it must be quarantined under (impressions).
ROW_DEFECTS = {
    "bad_type": "impressions_position_type",
    "null_key": "impressions_user_id_not_null",
    "duplicate": "impressions_key_unique",
    "orphan_user": "impressions_user_known",
    "orphan_item": "impressions_item_known",
    "conversion_without_click": "impressions_conversion_needs_click",
    "dwell_without_click": "impressions_dwell_needs_click",
    "out_of_day": "impressions_event_time_in_day",
    "negative_position": "impressions_position_non_negative",
    "unknown_channel": "impressions_recall_channel_set",
}
TABLE_DEFECTS = ("extra_column", "missing_column")
UNKNOWN_ID = 10**15


def corrupt_impressions(
    store: Store, day: dt.date, per_defect: int = 5, seed: int = 0, defects: tuple[str, ...] = tuple(ROW_DEFECTS)
) -> dict[str, tuple[str, list[int]]]:
    """Rewrite the raw impressions partition of ``day`` with ``per_defect`` rows of each defect.

    Returns:
        ``{defect: (expected rule, sorted row numbers)}`` in the rewritten partition.
    """
    table = store.read("impressions", day)
    n = table.num_rows
    rng = np.random.default_rng(seed)
    # Candidate rows: no click, so funnel defects can be made without touching other rules.
    no_click = np.flatnonzero(np.asarray(table["click"]) == 0)
    need = per_defect * len(defects)
    if len(no_click) < need:
        raise ValueError(f"partition too small to inject {need} defects")
    picks = rng.choice(no_click, need, replace=False).reshape(len(defects), per_defect)
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    injected: dict[str, tuple[str, list[int]]] = {}
    duplicates: list[int] = []
    for defect, rows in zip(defects, picks, strict=True):
        rows = sorted(int(r) for r in rows)
        if defect == "duplicate":
            duplicates = rows
            injected[defect] = (ROW_DEFECTS[defect], list(range(n, n + len(rows))))
            continue
        for r in rows:
            _apply(defect, columns, r)
        injected[defect] = (ROW_DEFECTS[defect], rows)
    if "bad_type" in defects:
        columns["position"] = [str(v) if isinstance(v, int) else v for v in columns["position"]]
    for r in duplicates:
        for values in columns.values():
            values.append(values[r])
    types = {f.name: f.type for f in table.schema}
    if "bad_type" in defects:
        types["position"] = pa.string()
    corrupted = pa.table({name: pa.array(values, types[name]) for name, values in columns.items()})
    write_file(store.partition_path("impressions", day), corrupted)
    return injected


def _apply(defect: str, columns: dict[str, list], r: int) -> None:
    if defect == "bad_type":
        columns["position"][r] = "n/a"
    elif defect == "null_key":
        columns["user_id"][r] = None
    elif defect == "orphan_user":
        columns["user_id"][r] = UNKNOWN_ID
    elif defect == "orphan_item":
        columns["item_id"][r] = UNKNOWN_ID
    elif defect == "conversion_without_click":
        columns["conversion"][r] = 1
    elif defect == "dwell_without_click":
        columns["dwell_seconds"][r] = 12.5
    elif defect == "out_of_day":
        columns["event_time"][r] = columns["event_time"][r] + dt.timedelta(days=2)
    elif defect == "negative_position":
        columns["position"][r] = -1
    elif defect == "unknown_channel":
        columns["recall_channel"][r] = "bogus"
    else:
        raise ValueError(f"unknown defect {defect!r}")


def drift_schema(store: Store, table: str, day: dt.date, defect: str) -> None:
    """Rewrite a raw partition with an extra column or without one of its columns."""
    raw = store.read(table, day)
    if defect == "extra_column":
        raw = raw.append_column("debug_flag", pc.equal(raw.column(0), raw.column(0)))
    elif defect == "missing_column":
        raw = raw.drop_columns([raw.column_names[-1]])
    else:
        raise ValueError(f"unknown table defect {defect!r}")
    write_file(store.partition_path(table, day), raw)
