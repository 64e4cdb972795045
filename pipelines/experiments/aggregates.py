"""Sums over units of the unit-days built by :mod:`.metrics`: what the statistics need, reduced in SQL.

Every ratio metric is reduced to per-bucket moments (:class:`~.stats.Moments`) over randomization units; with
CUPED, to the pre-period moments and the cross sums with them (:class:`~.cuped.Covariate`). Nothing of unit
size reaches Python except through :func:`unit_table` (the bootstrap check, A/A relabelling).
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from pipelines.experiments.cuped import Covariate
from pipelines.experiments.definitions import Metric, columns
from pipelines.experiments.stats import Moments

_MOMENTS = ("n", "sx", "sy", "sxx", "syy", "sxy")
_CROSS = ("y_py", "y_px", "x_py", "x_px")


def _per_unit(table: str, metrics: tuple[Metric, ...], eligible: str, assigned_by: dt.date) -> str:
    """SQL: one row per unit assigned by ``assigned_by`` with its sums over ``table`` (zeros when absent)."""
    sums = ", ".join(f"coalesce(sum(d.{c}), 0)::DOUBLE AS {c}" for c in columns(metrics) if c != "eligible")
    return f"""SELECT u.unit, u.bucket, ({eligible})::DOUBLE AS eligible, {sums}
        FROM units u LEFT JOIN {table} d ON d.unit = u.unit
        WHERE CAST(u.assigned_at AS DATE) <= DATE '{assigned_by}'
        GROUP BY u.unit, u.bucket, u.assigned_at"""


def _window_eligible(start: dt.date, end: dt.date) -> str:
    """SQL: a unit's eligible days in [start, end], from its assignment on (units that never came back count)."""
    return f"date_diff('day', greatest(CAST(u.assigned_at AS DATE), DATE '{start}'), DATE '{end}') + 1"


def _moment_sql(metrics: tuple[Metric, ...], w: str = "") -> str:
    parts = []
    for m in metrics:
        y, x = f"{w}{m.numerator}", f"{w}{m.denominator}"
        parts.append(
            f"sum({x}) AS {m.name}__sx, sum({y}) AS {m.name}__sy, sum({x}*{x}) AS {m.name}__sxx, "
            f"sum({y}*{y}) AS {m.name}__syy, sum({x}*{y}) AS {m.name}__sxy, "
            f"count(*) FILTER (WHERE {x} > 0)::DOUBLE AS {m.name}__n"
        )
    return ",\n".join(parts)


def _cross_sql(metrics: tuple[Metric, ...]) -> str:
    parts = []
    for m in metrics:
        y, x, py, px = f"w.{m.numerator}", f"w.{m.denominator}", f"p.{m.numerator}", f"p.{m.denominator}"
        parts.append(
            f"sum({y}*{py}) AS {m.name}__y_py, sum({y}*{px}) AS {m.name}__y_px, "
            f"sum({x}*{py}) AS {m.name}__x_py, sum({x}*{px}) AS {m.name}__x_px"
        )
    return ",\n".join(parts)


def _to_moments(row: dict, metrics: tuple[Metric, ...], prefix: str = "") -> dict[str, Moments]:
    return {m.name: Moments(*(row[f"{prefix}{m.name}__{k}"] or 0.0 for k in _MOMENTS)) for m in metrics}


def window_moments(
    con, metrics: tuple[Metric, ...], start: dt.date, end: dt.date, pre_days: int = 0
) -> tuple[dict[str, dict[str, Moments]], dict[str, dict[str, Covariate]]]:
    """bucket -> metric -> moments over the window, the unit being the randomization unit; and with
    ``pre_days`` (``pre_unit_days`` built over the days before ``start``) bucket -> metric -> covariate.

    A unit's ``eligible`` is its window days from assignment on; in the pre-period every unit counts all
    ``pre_days`` (any pre-treatment covariate keeps CUPED unbiased).
    """
    window = _per_unit("unit_days", metrics, _window_eligible(start, end), end)
    if not pre_days:
        sql = f"WITH w AS ({window}) SELECT bucket, {_moment_sql(metrics)} FROM w GROUP BY bucket"
    else:
        pre = _per_unit("pre_unit_days", metrics, str(pre_days), end)
        pre_moments = _moment_sql(metrics, "p.").replace(" AS ", " AS pre_")
        sql = f"""WITH w AS ({window}), p AS ({pre})
            SELECT w.bucket, {_moment_sql(metrics, "w.")}, {pre_moments}, {_cross_sql(metrics)}
            FROM w JOIN p USING (unit) GROUP BY w.bucket"""
    rows = con.execute(sql).fetchall()
    names = [d[0] for d in con.description]
    out, covariates = {}, {}
    for row in rows:
        record = dict(zip(names, row, strict=True))
        out[record["bucket"]] = _to_moments(record, metrics)
        if pre_days:
            pre = _to_moments(record, metrics, "pre_")
            covariates[record["bucket"]] = {
                m.name: Covariate(pre[m.name], *(record[f"{m.name}__{k}"] or 0.0 for k in _CROSS)) for m in metrics
            }
    return out, covariates


def daily_moments(con, metrics: tuple[Metric, ...]) -> dict[str, dict[str, dict[str, Moments]]]:
    """day -> bucket -> metric -> moments, the unit being the unit-day.

    A metric over ``eligible`` counts every unit assigned by that day (x = 1), not only the unit-days with rows.
    """
    rows = con.execute(f"SELECT day, bucket, {_moment_sql(metrics)} FROM unit_days GROUP BY day, bucket").fetchall()
    names = [d[0] for d in con.description]
    out: dict[str, dict[str, dict[str, Moments]]] = {}
    for row in rows:
        record = dict(zip(names, row, strict=True))
        out.setdefault(str(record["day"])[:10], {})[record["bucket"]] = _to_moments(record, metrics)
    eligible = con.execute(
        """SELECT CAST(d.day AS DATE) AS day, u.bucket, count(*) AS n
        FROM (SELECT DISTINCT day FROM unit_days) d JOIN units u ON CAST(u.assigned_at AS DATE) <= d.day
        GROUP BY ALL"""
    ).fetchall()
    for day, bucket, n in eligible:
        key = str(day)[:10]
        if key in out and bucket in out[key]:
            for m in (m for m in metrics if m.denominator == "eligible"):
                rows_m = out[key][bucket][m.name]
                out[key][bucket][m.name] = Moments(n, n, rows_m.sy, n, rows_m.syy, rows_m.sy)
    return out


def unit_table(con, metrics: tuple[Metric, ...], start: dt.date, end: dt.date, pre_days: int = 0) -> pa.Table:
    """One row per unit: unit, bucket, and per metric ``<name>__y``, ``<name>__x`` (``__py``, ``__px``: pre)."""
    window = _per_unit("unit_days", metrics, _window_eligible(start, end), end)
    select = [f"w.{m.numerator} AS {m.name}__y, w.{m.denominator} AS {m.name}__x" for m in metrics]
    sql = f"WITH w AS ({window}) SELECT w.unit, w.bucket, {', '.join(select)} FROM w"
    if pre_days:
        pre = _per_unit("pre_unit_days", metrics, str(pre_days), end)
        select += [f"p.{m.numerator} AS {m.name}__py, p.{m.denominator} AS {m.name}__px" for m in metrics]
        sql = (
            f"WITH w AS ({window}), p AS ({pre}) SELECT w.unit, w.bucket, {', '.join(select)} "
            "FROM w JOIN p USING (unit)"
        )
    return con.sql(sql).to_arrow_table()


def assigned_units(con, end: dt.date) -> dict[str, int]:
    """bucket -> units assigned by the end of ``end`` (what the SRM test counts)."""
    rows = con.execute(
        f"SELECT bucket, count(*) FROM units WHERE CAST(assigned_at AS DATE) <= DATE '{end}' GROUP BY bucket"
    ).fetchall()
    return {b: int(n) for b, n in rows}


def bucket_totals(con) -> dict[str, dict[str, float]]:
    """bucket -> active units, impressions and new-item impressions over the window (descriptive)."""
    rows = con.execute(
        """SELECT bucket, count(DISTINCT unit) FILTER (WHERE active > 0), sum(impressions), sum(new_imps)
        FROM unit_days GROUP BY bucket"""
    ).fetchall()
    return {b: {"active_units": int(a or 0), "impressions": float(i or 0), "new_imps": float(n or 0)}
            for b, a, i, n in rows}  # fmt: skip


def item_followup(con) -> tuple[dict[str, dict[str, int]], dict[str, tuple[list, list, list]]]:
    """Per bucket, new-item counts (published, matured per window, reached, hot) and time-to-first-exposure
    counts per distinct time (hours; events = first exposed then, censored = followed that long, never exposed).
    """
    counts = con.execute(
        f"""SELECT u.bucket, count(*) AS new_items,
               {", ".join(f"count(*) FILTER (WHERE n.{c}) AS {c}" for c in
                          ("matured_first", "matured_24h", "matured_new", "matured_hot"))},
               count(*) FILTER (WHERE n.matured_first AND x.first_exposure IS NULL) AS never_exposed_matured
        FROM new_items n JOIN units u ON u.unit = n.author_id LEFT JOIN item_exposure x USING (item_id)
        GROUP BY u.bucket"""
    ).fetchall()  # fmt: skip
    names = [d[0] for d in con.description]
    per_bucket = {r[0]: {k: int(v) for k, v in zip(names[1:], r[1:], strict=True)} for r in counts}
    times = con.execute(
        """SELECT u.bucket, round(coalesce((epoch(x.first_exposure) - epoch(n.publish_time)) / 3600.0,
                                           n.followed_hours), 4) AS t,
               count(x.first_exposure) AS events, count(*) - count(x.first_exposure) AS censored
        FROM new_items n JOIN units u ON u.unit = n.author_id LEFT JOIN item_exposure x USING (item_id)
        GROUP BY ALL ORDER BY 1, 2"""
    ).fetchall()
    curves: dict[str, tuple[list, list, list]] = {}
    for bucket, t, events, censored in times:
        lists = curves.setdefault(bucket, ([], [], []))
        for target, value in zip(lists, (t, events, censored), strict=True):
            target.append(value)
    return per_bucket, curves
