"""The event-log contract: the only reader and writer of partitioned parquet (schemas: :mod:`.schemas`).

Layout under ``COLDSTART_HOME``::

    data/<dataset>/<layer>/<table>/date=YYYY-MM-DD/part-0.parquet

``dataset`` is e.g. ``sim`` (the platform simulator) or ``ml1m`` (MovieLens-1M); ``layer`` is ``raw``
(as logged), ``clean`` / ``quarantine`` (after validation) or ``truth`` (the simulator's hidden ground truth).

A partition is one parquet file (with as many row groups as needed). Writing goes to a temporary file in the
same folder and is moved into place with ``os.replace``, which is atomic on POSIX: a reader sees the old
partition or the new one, never a half-written one, and a crash leaves at most a stray ``.tmp-*`` file that
the next write of that partition removes. Writing a partition again replaces it whole.

Event tables (impressions, publishes, assignments, ratings) are partitioned by the day of their event time.
Dimension tables (users, items) are partitioned by the day the entity appeared (signup / publish); the first
partition of a log also holds every entity that existed before the log starts.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.data.schemas import (
    ASSIGNMENTS,
    BUCKETS,
    IMPRESSION_TRUTH,
    IMPRESSIONS,
    ITEMS,
    PUBLISHES,
    RATINGS,
    RECALL_CHANNELS,
    TABLES,
    TS,
    USERS,
    ContractError,
    TableSpec,
    table_spec,
)

# The table declarations live in ``schemas``; they are re-exported so that the contract stays one import.
__all__ = [
    "ASSIGNMENTS", "BUCKETS", "IMPRESSION_TRUTH", "IMPRESSIONS", "ITEMS", "LAYERS", "PART_FILE", "PUBLISHES",
    "RATINGS", "RECALL_CHANNELS", "TABLES", "TS", "USERS", "ContractError", "MissingPartitionError",
    "PartitionWriter", "Store", "TableSpec", "conform", "day_bounds", "sql_file_list", "table_spec", "write_file",
]  # fmt: skip

PART_FILE = "part-0.parquet"
LAYERS = ("raw", "clean", "quarantine", "truth")


class MissingPartitionError(FileNotFoundError):
    """A partition that was asked for does not exist."""


_DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


def _check_layer(layer: str) -> None:
    if layer not in LAYERS:
        raise ContractError(f"Unknown layer {layer!r}; expected one of {LAYERS}")


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The UTC [start, end) of a partition day."""
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


class Store:
    """Partitioned parquet store for one dataset under ``<home>/data/<dataset>``."""

    def __init__(self, data_dir: Path, dataset: str) -> None:
        if not re.fullmatch(r"[a-z0-9_]+", dataset):
            raise ContractError(f"Dataset names are lower-case letters, digits and '_': got {dataset!r}")
        self.root = Path(data_dir) / dataset
        self.dataset = dataset

    def table_dir(self, table: str, layer: str = "raw") -> Path:
        _check_layer(layer)
        table_spec(table)
        return self.root / layer / table

    def partition_path(self, table: str, day: dt.date, layer: str = "raw") -> Path:
        return self.table_dir(table, layer) / f"date={day.isoformat()}" / PART_FILE

    def partitions(self, table: str, layer: str = "raw") -> list[dt.date]:
        """Days that have a complete partition, sorted."""
        folder = self.table_dir(table, layer)
        if not folder.is_dir():
            return []
        days = []
        for child in folder.iterdir():
            match = _DATE_DIR.match(child.name)
            if match and (child / PART_FILE).is_file():
                days.append(dt.date.fromisoformat(match.group(1)))
        return sorted(days)

    @contextmanager
    def writer(self, table: str, day: dt.date, layer: str = "raw") -> Iterator[PartitionWriter]:
        """Open one partition for streaming writes; it replaces the old partition only on a clean exit.

        Every batch is checked against the schema before it is written; on any error the old partition
        (if any) stays as it was and no temporary file is left.
        """
        spec = table_spec(table)
        path = self.partition_path(table, day, layer)
        with _atomic_parquet(path, spec.schema) as parquet_writer:
            yield PartitionWriter(spec, parquet_writer)

    def write(self, table: str, day: dt.date, data: pa.Table | Iterable[pa.Table], layer: str = "raw") -> Path:
        """Replace one partition, atomically, after checking every batch against the schema.

        Args:
            table: contract table name.
            day: the partition day.
            data: one table or an iterable of tables (streamed into row groups).
            layer: storage layer.

        Returns:
            The partition file.

        Raises:
            ContractError: when a batch does not conform; nothing is left behind.
        """
        with self.writer(table, day, layer) as out:
            for batch in [data] if isinstance(data, pa.Table) else data:
                out.write(batch)
        return self.partition_path(table, day, layer)

    def drop_partitions_except(self, table: str, keep: Iterable[dt.date], layer: str = "raw") -> list[dt.date]:
        """Remove the partitions of ``table`` whose day is not in ``keep``; returns the days removed."""
        keep = set(keep)
        removed = []
        for day in self.partitions(table, layer):
            if day not in keep:
                path = self.partition_path(table, day, layer)
                path.unlink()
                path.parent.rmdir()
                removed.append(day)
        return removed

    def read(
        self,
        table: str,
        day: dt.date,
        layer: str = "raw",
        columns: list[str] | None = None,
    ) -> pa.Table:
        """Read one partition.

        Raises:
            MissingPartitionError: naming the partition and the days that do exist.
        """
        spec = table_spec(table)
        path = self.partition_path(table, day, layer)
        if not path.is_file():
            have = self.partitions(table, layer)
            span = f"{have[0]}..{have[-1]} ({len(have)} days)" if have else "none"
            raise MissingPartitionError(
                f"No {layer}/{table} partition for {day} in dataset {self.dataset!r} at {path}; "
                f"partitions present: {span}"
            )
        return pq.read_table(path, columns=columns, schema=spec.schema)

    def read_range(
        self,
        table: str,
        start: dt.date | None = None,
        end: dt.date | None = None,
        layer: str = "raw",
        columns: list[str] | None = None,
    ) -> pa.Table:
        """Read and concatenate the partitions with ``start <= day <= end`` (all when unbounded)."""
        days = [d for d in self.partitions(table, layer) if (start is None or d >= start) and (end is None or d <= end)]
        return pa.concat_tables(
            [self.read(table, d, layer, columns) for d in days]
            or [table_spec(table).schema.empty_table().select(columns or table_spec(table).schema.names)]
        )

    def iter_batches(
        self, table: str, day: dt.date, layer: str = "raw", batch_size: int = 1_000_000
    ) -> Iterator[pa.RecordBatch]:
        """Stream one partition in record batches (bounded memory)."""
        self.read(table, day, layer, columns=[])  # raises MissingPartitionError clearly
        parquet = pq.ParquetFile(self.partition_path(table, day, layer))
        yield from parquet.iter_batches(batch_size=batch_size)


class PartitionWriter:
    """Streaming writer of one partition; see :meth:`Store.writer`."""

    def __init__(self, spec: TableSpec, parquet_writer: pq.ParquetWriter) -> None:
        self.spec = spec
        self._writer = parquet_writer
        self.rows = 0

    def write(self, batch: pa.Table) -> None:
        """Check ``batch`` against the contract and append it as a row group."""
        batch = conform(self.spec, batch)
        self._writer.write_table(batch)
        self.rows += batch.num_rows


def conform(spec: TableSpec, table: pa.Table) -> pa.Table:
    """Check a table against its schema and return it in the contract's column order and types.

    Columns must match by name exactly (no missing, no extra); types are cast safely (no overflow, no lossy
    float-to-int) and non-nullable columns must hold no nulls.

    Raises:
        ContractError: naming the table and each problem found.
    """
    expected = spec.schema
    have = set(table.column_names)
    want = set(expected.names)
    problems = []
    if missing := sorted(want - have):
        problems.append(f"missing columns {missing}")
    if extra := sorted(have - want):
        problems.append(f"unexpected columns {extra}")
    if problems:
        raise ContractError(f"{spec.name}: " + "; ".join(problems))
    columns = []
    for field in expected:
        column = table.column(field.name)
        if not column.type.equals(field.type):
            try:
                column = column.cast(field.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                problems.append(f"column {field.name!r} of type {column.type} does not cast to {field.type}: {exc}")
                continue
        if not field.nullable and column.null_count:
            problems.append(f"column {field.name!r} has {column.null_count} nulls but is required")
        columns.append(column)
    if problems:
        raise ContractError(f"{spec.name}: " + "; ".join(problems))
    return pa.Table.from_arrays(columns, schema=expected)


@contextmanager
def _atomic_parquet(path: Path, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
    """Yield a writer to a temporary file next to ``path``; move it into place only on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".tmp-{path.name}-*"):
        stale.unlink(missing_ok=True)
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex}"
    writer = pq.ParquetWriter(tmp, schema, compression="zstd", write_statistics=True)
    try:
        yield writer
        writer.close()
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if writer.is_open:
            writer.close()
        tmp.unlink(missing_ok=True)
        raise


def sql_file_list(paths: Iterable[str | Path]) -> str:
    """Partition files as a SQL list literal for ``read_parquet([...])`` (DuckDB)."""
    return "[" + ", ".join(f"'{p}'" for p in paths) + "]"


def write_file(path: Path, table: pa.Table) -> Path:
    """Write a non-partitioned artifact (e.g. a dataset split) atomically, keeping its own schema."""
    with _atomic_parquet(Path(path), table.schema) as writer:
        writer.write_table(table)
    return Path(path)
