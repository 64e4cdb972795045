"""Quarantine rules: the Great Expectations suites for the raw event logs, defined in code and versioned with the
repository.

Every expectation carries ``meta["rule"]``, the name a quarantined row records when it breaks it. Row-level
rules are GX column-map expectations evaluated on the table itself. Rules that need more than one row or
another table (a duplicate key, a reference to a user that does not exist, a value that did not parse as its
contract type) are computed first, vectorised, into boolean helper columns (``_ok_*``) that the suite then
asserts with ``expect_column_values_to_be_in_set([True])``; that keeps the suite the single list of rules
while uniqueness and joins are done once over the whole partition rather than per chunk.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd

from pipelines.data.contract import BUCKETS, RECALL_CHANNELS, TableSpec, day_bounds, table_spec

SUITE_VERSION = "1"
ROW = "_row"
# Tables validated for a day, in dependency order (dimensions before the events that reference them).
VALIDATED_TABLES = ("users", "items", "publishes", "assignments", "impressions")


@dataclass(frozen=True)
class Reference:
    """A foreign key checked against the clean rows of another table."""

    column: str
    table: str
    target_column: str
    rule: str


REFERENCES: dict[str, tuple[Reference, ...]] = {
    "items": (Reference("author_id", "users", "user_id", "items_author_known"),),
    "publishes": (Reference("author_id", "users", "user_id", "publishes_author_known"),),
    "assignments": (Reference("unit_id", "users", "user_id", "assignments_unit_known"),),
    "impressions": (
        Reference("user_id", "users", "user_id", "impressions_user_known"),
        Reference("item_id", "items", "item_id", "impressions_item_known"),
    ),
}


def helper_column(rule: str) -> str:
    """Name of the boolean helper column behind a computed rule."""
    return f"_ok_{rule}"


def unique_rule(spec: TableSpec) -> str:
    return f"{spec.name}_key_unique"


def type_rule(spec: TableSpec, column: str) -> str:
    return f"{spec.name}_{column}_type"


def _rule(expectation: gxe.Expectation, rule: str) -> gxe.Expectation:
    expectation.meta = {"rule": rule}
    return expectation


def _in_set(column: str, values: list, rule: str) -> gxe.Expectation:
    return _rule(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=values), rule)


def _computed(rule: str) -> gxe.Expectation:
    return _rule(gxe.ExpectColumnValuesToBeInSet(column=helper_column(rule), value_set=[True]), rule)


def build_suite(table: str, day: dt.date, typed_columns: tuple[str, ...] = ()) -> gx.ExpectationSuite:
    """The expectation suite of ``table`` for partition ``day``.

    Args:
        table: a table in :data:`VALIDATED_TABLES`.
        day: the partition day (timestamps must fall inside it, or before its end for dimension tables).
        typed_columns: columns that arrived as text and were parsed; each gets a ``<table>_<col>_type`` rule.
    """
    spec = table_spec(table)
    start, end = day_bounds(day)
    suite = gx.ExpectationSuite(name=f"{table}_v{SUITE_VERSION}", meta={"version": SUITE_VERSION, "table": table})
    for field in spec.schema:
        if not field.nullable:
            suite.add_expectation(
                _rule(gxe.ExpectColumnValuesToNotBeNull(column=field.name), f"{table}_{field.name}_not_null")
            )
    for column in typed_columns:
        suite.add_expectation(_computed(type_rule(spec, column)))
    suite.add_expectation(_computed(unique_rule(spec)))
    time_min = start if spec.kind == "event" else None
    suite.add_expectation(
        _rule(
            gxe.ExpectColumnValuesToBeBetween(
                column=spec.time_column, min_value=time_min, max_value=end, strict_max=True
            ),
            f"{table}_{spec.time_column}_in_day",
        )
    )
    for ref in REFERENCES.get(table, ()):
        suite.add_expectation(_computed(ref.rule))
    for expectation in _table_rules(table):
        suite.add_expectation(expectation)
    return suite


def _table_rules(table: str) -> list[gxe.Expectation]:
    if table == "users":
        return [
            _rule(gxe.ExpectColumnValuesToBeBetween(column="age", min_value=1, max_value=120), "users_age_range"),
            _in_set("gender", ["F", "M", "X"], "users_gender_set"),
        ]
    if table == "items":
        return [_rule(gxe.ExpectColumnValueLengthsToBeBetween(column="category", min_value=1), "items_category_set")]
    if table == "assignments":
        return [
            _in_set("bucket", list(BUCKETS), "assignments_bucket_set"),
            _in_set("unit_type", ["user", "author"], "assignments_unit_type_set"),
        ]
    if table == "impressions":
        return [
            _rule(
                gxe.ExpectColumnValuesToBeBetween(column="position", min_value=0), "impressions_position_non_negative"
            ),
            _rule(
                gxe.ExpectColumnValuesToBeBetween(column="dwell_seconds", min_value=0), "impressions_dwell_non_negative"
            ),
            _in_set("click", [0, 1], "impressions_click_binary"),
            _in_set("conversion", [0, 1], "impressions_conversion_binary"),
            _in_set("recall_channel", list(RECALL_CHANNELS), "impressions_recall_channel_set"),
            _in_set("experiment_bucket", list(BUCKETS), "impressions_bucket_set"),
            # ESMM's funnel: a conversion needs a click (click=0, conversion=1 is an illegal sample).
            _rule(
                gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="click", column_B="conversion", or_equal=True),
                "impressions_conversion_needs_click",
            ),
            _computed("impressions_dwell_needs_click"),
        ]
    return []


def row_helpers(table: str) -> dict[str, Callable[[pd.DataFrame], pd.Series]]:
    """Computed rules that look at one row only: rule -> function returning True where the row is fine."""
    if table == "impressions":
        return {"impressions_dwell_needs_click": lambda f: ~((f["dwell_seconds"] > 0) & (f["click"] != 1))}
    return {}
