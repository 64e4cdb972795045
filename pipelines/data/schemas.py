"""Every table of the event-log contract: its exact schema, time column, key and kind.

:mod:`pipelines.data.contract` is the only reader and writer of these tables; this module only declares them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
# The simulator's own recall channels (its channel mixes index these), then the platform's (the age pools of the
# two-tower model, content interests, content clusters, look-alike: ``pipelines.retrieval``), which a closed-loop
# run logs when the platform's retrieval fills the feed. An impression logs the channel whose quota took the item.
SIM_RECALL_CHANNELS = ("popular", "interest", "new_item", "random")
PLATFORM_RECALL_CHANNELS = ("1h", "6h", "24h", "30d", "category", "keyword", "cluster", "lookalike")
RECALL_CHANNELS = SIM_RECALL_CHANNELS + PLATFORM_RECALL_CHANNELS
# "holdout": a balanced author split's authors outside both compared groups (served as control, not compared).
BUCKETS = ("control", "treatment", "holdout")


class ContractError(ValueError):
    """A table, layer or row set that does not fit the contract."""


@dataclass(frozen=True)
class TableSpec:
    """One table of the contract.

    Attributes:
        name: table name, also its folder name.
        schema: the exact pyarrow schema of every partition.
        time_column: the column whose UTC day names the partition.
        key: columns that identify a row uniquely.
        kind: ``event`` (time inside the partition's day) or ``dimension`` (time at or before its end).
    """

    name: str
    schema: pa.Schema
    time_column: str
    key: tuple[str, ...]
    kind: str


def _schema(*fields: pa.Field, doc: str) -> pa.Schema:
    return pa.schema(list(fields), metadata={"doc": doc})


USERS = TableSpec(
    "users",
    _schema(
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("signup_time", TS, nullable=False),
        pa.field("gender", pa.string()),
        pa.field("age", pa.int16()),
        pa.field("occupation", pa.string()),
        pa.field("region", pa.string()),
        pa.field("device", pa.string()),
        pa.field("is_author", pa.bool_(), nullable=False),
        doc="One row per user, in the partition of the day the user signed up.",
    ),
    "signup_time",
    ("user_id",),
    "dimension",
)

ITEMS = TableSpec(
    "items",
    _schema(
        pa.field("item_id", pa.int64(), nullable=False),
        # Null where the source has no authors (MovieLens).
        pa.field("author_id", pa.int64()),
        pa.field("category", pa.string(), nullable=False),
        pa.field("keywords", pa.list_(pa.string())),
        pa.field("content_vector", pa.list_(pa.float32())),
        pa.field("publish_time", TS, nullable=False),
        doc="One row per item, in the partition of the day it was published.",
    ),
    "publish_time",
    ("item_id",),
    "dimension",
)

IMPRESSIONS = TableSpec(
    "impressions",
    _schema(
        pa.field("request_id", pa.int64(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("event_time", TS, nullable=False),
        pa.field("position", pa.int16(), nullable=False),
        pa.field("recall_channel", pa.string(), nullable=False),
        pa.field("experiment_bucket", pa.string(), nullable=False),
        pa.field("click", pa.int8(), nullable=False),
        pa.field("conversion", pa.int8(), nullable=False),
        pa.field("dwell_seconds", pa.float32(), nullable=False),
        doc="One row per item shown in a feed request, with the user's response.",
    ),
    "event_time",
    ("request_id", "position"),
    "event",
)

PUBLISHES = TableSpec(
    "publishes",
    _schema(
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("author_id", pa.int64(), nullable=False),
        pa.field("publish_time", TS, nullable=False),
        doc="One row per item an author published (the author-side event log).",
    ),
    "publish_time",
    ("item_id",),
    "event",
)

ASSIGNMENTS = TableSpec(
    "assignments",
    _schema(
        pa.field("experiment_id", pa.string(), nullable=False),
        pa.field("unit_type", pa.string(), nullable=False),
        pa.field("unit_id", pa.int64(), nullable=False),
        pa.field("bucket", pa.string(), nullable=False),
        pa.field("design", pa.string(), nullable=False),
        pa.field("assigned_at", TS, nullable=False),
        doc="Experiment assignment of a unit (user or author) to a bucket, logged when first assigned.",
    ),
    "assigned_at",
    ("experiment_id", "unit_type", "unit_id"),
    "event",
)

RATINGS = TableSpec(
    "ratings",
    _schema(
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("rating", pa.float32(), nullable=False),
        pa.field("event_time", TS, nullable=False),
        doc="Explicit feedback (MovieLens ratings, 1-5).",
    ),
    "event_time",
    ("user_id", "item_id"),
    "event",
)

# Ground truth the simulator writes beside its logs (layer ``truth``), aligned with ``impressions``.
IMPRESSION_TRUTH = TableSpec(
    "impression_truth",
    _schema(
        pa.field("request_id", pa.int64(), nullable=False),
        pa.field("position", pa.int16(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("event_time", TS, nullable=False),
        pa.field("is_new_user", pa.bool_(), nullable=False),
        pa.field("p_click", pa.float32(), nullable=False),
        pa.field("p_conversion_given_click", pa.float32(), nullable=False),
        doc="True click probability (with position bias) and conversion probability given a click.",
    ),
    "event_time",
    ("request_id", "position"),
    "event",
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec for spec in (USERS, ITEMS, IMPRESSIONS, PUBLISHES, ASSIGNMENTS, RATINGS, IMPRESSION_TRUTH)
}


def table_spec(name: str) -> TableSpec:
    """Look a table up by name.

    Raises:
        ContractError: for a name the contract does not define.
    """
    try:
        return TABLES[name]
    except KeyError:
        raise ContractError(f"Unknown table {name!r}; the contract defines {sorted(TABLES)}") from None
