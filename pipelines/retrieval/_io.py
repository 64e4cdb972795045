"""Helpers the retrieval indexes share: timestamps as int nanoseconds, id and vector checks that say what is
wrong, and atomic ``.npz`` files (a reader sees the old file or the new one, never half of one)."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def utc_ns(times: Any) -> np.ndarray:
    """[n] int64 nanoseconds since the epoch of timestamps (naive ones are read as UTC; an int array is already
    nanoseconds); a NaT is a ValueError."""
    if isinstance(times, np.ndarray) and times.dtype.kind in "iM":  # fast path: no pandas on a request
        ns = times.astype("datetime64[ns]").view(np.int64).ravel() if times.dtype.kind == "M" else times.ravel()
        if times.dtype.kind == "M" and np.isnat(times).any():
            raise ValueError(f"times must be set, got {int(np.isnat(times).sum())} missing")
        return ns.astype(np.int64, copy=False)
    try:
        stamps = pd.DatetimeIndex(pd.to_datetime([times] if np.ndim(times) == 0 else times, utc=True))
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"times must be timestamps: {err}") from err
    if stamps.isna().any():
        raise ValueError(f"times must be set, got {int(stamps.isna().sum())} missing")
    return stamps.as_unit("ns").asi8.astype(np.int64)


def utc_ns1(time: Any) -> int:
    """One timestamp as int nanoseconds (see :func:`utc_ns`)."""
    return int(utc_ns([time])[0])


def duration_ns(delta: timedelta) -> int:
    return int(pd.Timedelta(delta).value)


def save_npz_atomic(folder: str | Path, name: str, **arrays: np.ndarray) -> Path:
    """Write ``folder/name`` through a temporary name and ``os.replace``: a reader sees the old file or the new."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-{name}-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, folder / name)
    finally:
        tmp.unlink(missing_ok=True)
    return folder / name


def load_npz(folder: str | Path, name: str) -> dict[str, np.ndarray]:
    with np.load(Path(folder) / name, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def check_ids(ids, name: str = "ids") -> np.ndarray:
    """``ids`` as a 1-D int64 array of distinct non-negative integers, or a ValueError that says why."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} must be non-negative (-1 pads search results), got {int(arr.min())}")
    unique, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"duplicate {name}: {unique[counts > 1][:10].tolist()}")
    return arr


def unit_rows(vectors, dim: int, name: str = "vectors") -> np.ndarray:
    """``vectors`` [n, dim] (or one [dim] row) as L2-normalised float32 rows, or a ValueError that says why."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{name} must have shape [n, {dim}], got {np.asarray(vectors).shape}")
    if not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise ValueError(f"{name} hold NaN or infinite values (rows {bad[:10].tolist()})")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name} hold all-zero rows (rows {np.flatnonzero(norms[:, 0] == 0)[:10].tolist()})")
    return np.ascontiguousarray(arr / norms)
