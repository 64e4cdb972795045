import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.data.contract import (
    TABLES,
    ContractError,
    MissingPartitionError,
    Store,
    conform,
    table_spec,
)

DAY = dt.date(2026, 3, 1)


def publishes(n: int, offset: int = 0) -> pa.Table:
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    return pa.table(
        {
            "item_id": list(range(offset, offset + n)),
            "author_id": [7] * n,
            "publish_time": [start + dt.timedelta(minutes=i) for i in range(n)],
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path, "unit")


def no_temp_files(store: Store) -> bool:
    return not list(store.root.rglob(".tmp-*"))


def test_every_table_declares_its_key_and_time_columns() -> None:
    for spec in TABLES.values():
        assert spec.time_column in spec.schema.names
        assert set(spec.key) <= set(spec.schema.names)
        assert spec.kind in {"event", "dimension"}
        assert spec.schema.field(spec.time_column).type == pa.timestamp("us", tz="UTC")


def test_round_trip_keeps_schema_and_values(store: Store) -> None:
    store.write("publishes", DAY, publishes(5))
    back = store.read("publishes", DAY)
    assert back.schema.equals(table_spec("publishes").schema, check_metadata=False)
    assert back.to_pylist() == conform(table_spec("publishes"), publishes(5)).to_pylist()
    assert store.partitions("publishes") == [DAY]


def test_round_trip_of_nested_columns(store: Store) -> None:
    items = pa.table(
        {
            "item_id": [1, 2],
            "author_id": [None, 3],
            "category": ["food", "pets"],
            "keywords": [["a", "b"], []],
            "content_vector": [[0.5, 1.5], [2.0, -1.0]],
            "publish_time": [dt.datetime(2026, 3, 1, 5, tzinfo=dt.UTC)] * 2,
        }
    )
    store.write("items", DAY, items)
    back = store.read("items", DAY).to_pylist()
    assert back[0]["keywords"] == ["a", "b"] and back[1]["author_id"] == 3
    assert back[1]["content_vector"] == [2.0, -1.0]


def test_rewrite_replaces_the_partition_whole_and_is_idempotent(store: Store) -> None:
    path = store.write("publishes", DAY, publishes(10))
    store.write("publishes", DAY, publishes(3, offset=100))
    assert store.read("publishes", DAY).column("item_id").to_pylist() == [100, 101, 102]
    first = path.read_bytes()
    store.write("publishes", DAY, publishes(3, offset=100))
    assert path.read_bytes() == first
    assert no_temp_files(store)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (publishes(3).drop_columns(["author_id"]), r"missing columns \['author_id'\]"),
        (publishes(3).append_column("extra", pa.array([1, 2, 3])), r"unexpected columns \['extra'\]"),
        (
            publishes(3).set_column(1, "author_id", pa.array(["x", "y", "z"])),
            "author_id.*does not cast to int64",
        ),
        (
            publishes(3).set_column(1, "author_id", pa.array([1, None, 3])),
            "author_id.*1 nulls but is required",
        ),
        (publishes(3).set_column(1, "author_id", pa.array([1.5, 2.0, 3.0])), "author_id.*does not cast"),
    ],
    ids=["missing-column", "extra-column", "wrong-type", "null-key", "lossy-float"],
)
def test_schema_violations_fail_and_leave_the_old_partition(store: Store, bad: pa.Table, message: str) -> None:
    path = store.write("publishes", DAY, publishes(4))
    before = path.read_bytes()
    with pytest.raises(ContractError, match=message):
        store.write("publishes", DAY, bad)
    assert path.read_bytes() == before
    assert no_temp_files(store)


def test_a_violation_in_a_later_batch_writes_nothing(store: Store) -> None:
    with pytest.raises(ContractError):
        store.write("publishes", DAY, iter([publishes(4), publishes(2).drop_columns(["item_id"])]))
    assert store.partitions("publishes") == []
    assert no_temp_files(store)


def test_a_crash_mid_write_leaves_the_old_partition(store: Store) -> None:
    path = store.write("publishes", DAY, publishes(4))
    before = path.read_bytes()

    def crashing():
        yield publishes(50)
        raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        store.write("publishes", DAY, crashing())
    assert path.read_bytes() == before
    assert no_temp_files(store)


def test_a_stale_temp_file_is_cleared_by_the_next_write(store: Store) -> None:
    path = store.write("publishes", DAY, publishes(1))
    stale = path.parent / f".tmp-{path.name}-deadbeef"
    stale.write_bytes(b"half a file")
    assert store.partitions("publishes") == [DAY]
    store.write("publishes", DAY, publishes(2))
    assert not stale.exists()


def test_missing_partition_names_what_exists(store: Store) -> None:
    store.write("publishes", DAY, publishes(1))
    with pytest.raises(MissingPartitionError, match=r"2026-03-02.*partitions present: 2026-03-01\.\.2026-03-01"):
        store.read("publishes", DAY + dt.timedelta(days=1))
    with pytest.raises(MissingPartitionError, match="partitions present: none"):
        store.read("impressions", DAY)


def test_unknown_table_layer_or_dataset_are_rejected(tmp_path: Path, store: Store) -> None:
    with pytest.raises(ContractError, match="Unknown table"):
        store.write("clicks", DAY, publishes(1))
    with pytest.raises(ContractError, match="Unknown layer"):
        store.read("publishes", DAY, layer="gold")
    with pytest.raises(ContractError, match="Dataset names"):
        Store(tmp_path, "../escape")


def test_read_range_concatenates_days(store: Store) -> None:
    for i in range(3):
        store.write("publishes", DAY + dt.timedelta(days=i), publishes(2, offset=10 * i))
    table = store.read_range("publishes", DAY + dt.timedelta(days=1))
    assert table.column("item_id").to_pylist() == [10, 11, 20, 21]
    assert store.read_range("publishes", dt.date(2030, 1, 1)).num_rows == 0
    assert sum(b.num_rows for b in store.iter_batches("publishes", DAY, batch_size=1)) == 2
