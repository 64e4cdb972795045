"""Cold-start slices of an evaluation frame: new/warm users × new/warm items, exposure buckets, custom expressions.

Each impression is annotated with four quantities, all as of the impression:

* ``user_age_days``: days since the user signed up (from the user's ``signup_time``);
* ``user_interactions``: the user's ``view_count`` feature (impressions up to the previous day; none = 0);
* ``item_age_hours``: hours since the item was published (from the item's ``publish_time``);
* ``item_exposures``: the item's ``exposures_total`` feature (impressions up to the previous day; none = 0).

A user is new when the chosen quantity is below its threshold, and so is an item; exposure buckets cut
``item_exposures`` at the configured edges. A custom slice is a boolean pandas expression over the frame's
columns (features and the four quantities), e.g. ``"user_interactions < 20"``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.evaluation.config import SliceConfig


class SliceError(ValueError):
    """A slice definition that cannot be evaluated on the frame."""


def annotate(frame: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Add the four slicing quantities; ``users`` has ``user_id, signup_time``, ``items`` ``item_id, publish_time``.

    Ids missing from ``users`` / ``items`` (not in the contract) count as just signed up / just published.
    """
    out = frame.copy()
    when = pd.to_datetime(out["event_time"], utc=True)
    signup = out["user_id"].map(users.drop_duplicates("user_id").set_index("user_id")["signup_time"])
    published = out["item_id"].map(items.drop_duplicates("item_id").set_index("item_id")["publish_time"])
    user_age = (when - pd.to_datetime(signup, utc=True)).dt.total_seconds() / 86400
    item_age = (when - pd.to_datetime(published, utc=True)).dt.total_seconds() / 3600
    out["user_age_days"] = user_age.fillna(0).clip(lower=0)
    out["item_age_hours"] = item_age.fillna(0).clip(lower=0)
    out["user_interactions"] = _counts(out, "view_count")
    out["item_exposures"] = _counts(out, "exposures_total")
    return out


def _counts(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series(0.0, index=frame.index)
    return pd.to_numeric(frame[column], errors="coerce").fillna(0).astype(float)


def slice_masks(frame: pd.DataFrame, cfg: SliceConfig) -> dict[str, np.ndarray]:
    """name -> boolean mask over ``frame`` (annotated by :func:`annotate`); ``overall`` first."""
    missing = {"user_age_days", "item_age_hours", "user_interactions", "item_exposures"} - set(frame.columns)
    if missing:
        raise SliceError(f"frame is not annotated: missing {sorted(missing)}")
    user_q = frame["user_age_days"] if cfg.user_new_by == "days_since_signup" else frame["user_interactions"]
    item_q = frame["item_age_hours"] if cfg.item_new_by == "age_hours" else frame["item_exposures"]
    new_user, new_item = (user_q < cfg.user_new_below).to_numpy(), (item_q < cfg.item_new_below).to_numpy()
    masks = {
        "overall": np.ones(len(frame), dtype=bool),
        "user=new": new_user,
        "user=warm": ~new_user,
        "item=new": new_item,
        "item=warm": ~new_item,
    }
    if cfg.cross:
        for u_name, u in (("new", new_user), ("warm", ~new_user)):
            for i_name, i in (("new", new_item), ("warm", ~new_item)):
                masks[f"user={u_name}&item={i_name}"] = u & i
    bucket = np.digitize(frame["item_exposures"].to_numpy(), cfg.exposure_edges)
    for index, name in enumerate(cfg.bucket_names()):
        masks[name] = bucket == index
    for name, expr in cfg.custom.items():
        if name in masks:
            raise SliceError(f"custom slice {name!r} shadows a built-in slice")
        masks[name] = _evaluate(frame, name, expr)
    return masks


def _evaluate(frame: pd.DataFrame, name: str, expr: str) -> np.ndarray:
    try:
        result = frame.eval(expr, engine="python")
    except Exception as exc:  # undefined column, syntax error: say which slice
        raise SliceError(f"custom slice {name!r}: cannot evaluate {expr!r}: {exc}") from exc
    if not isinstance(result, pd.Series) or result.dtype != bool:
        raise SliceError(f"custom slice {name!r}: {expr!r} is not a boolean expression over the rows")
    return result.to_numpy()


def cold_slices(names: list[str], cfg: SliceConfig) -> list[str]:
    """Slices about new users, new items or the lowest exposure bucket: what the gate's cold tolerance protects."""
    return [n for n in names if "=new" in n or n == cfg.bucket_names()[0]]
