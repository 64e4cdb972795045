"""Multiple-testing correction over a family of tests: Holm (family-wise error) or Benjamini-Hochberg (FDR).

Holm's step-down (Holm 1979) keeps the probability of any false rejection in the family at most alpha under
any dependence between the tests; Benjamini-Hochberg (1995) keeps the expected share of false rejections at
most alpha for independent or positively dependent tests (``scipy.stats.false_discovery_control``;
statsmodels' ``multipletests`` is not a dependency here). A test without a p-value (a metric with no data in
one bucket) is not part of the family and keeps NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import stats

Method = Literal["holm", "bh"]


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values: ``max_{j<=i} min(1, (m - j + 1) p_(j))`` in ascending order of p."""
    m = len(p_values)
    order = np.argsort(p_values, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p_values[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    return adjusted


def adjust(p_values: Sequence[float], method: Method = "holm") -> np.ndarray:
    """Adjusted p-values of the finite ``p_values`` as one family; NaN stays NaN.

    Raises:
        ValueError: for an unknown method.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    tested = np.isfinite(p)
    if not tested.any():
        return out
    if method == "holm":
        out[tested] = holm(p[tested])
    elif method == "bh":
        out[tested] = stats.false_discovery_control(p[tested], method="bh")
    else:
        raise ValueError(f"unknown correction {method!r}; expected 'holm' or 'bh'")
    return out
