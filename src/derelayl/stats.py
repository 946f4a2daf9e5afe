"""Inequality measures shared by the simulator, the local network and experiments, and the
confidence interval every table over seeds uses."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["format_interval", "gini", "gini_rows", "interval"]

F64 = NDArray[np.float64]


def gini_rows(values: F64) -> F64:
    """Gini coefficient of each row; NaN entries (absent participants) are ignored."""
    x = np.sort(values, axis=1)  # NaN sorts last
    valid = ~np.isnan(x)
    n = valid.sum(axis=1).astype(np.float64)
    x = np.where(valid, x, 0.0)
    total = x.sum(axis=1)
    i = np.arange(1, x.shape[1] + 1, dtype=np.float64)
    weighted = (x * i).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        g = 2.0 * weighted / (n * total) - (n + 1.0) / n
    return np.where(total > 0, g, 0.0)


def gini(values: ArrayLike) -> float:
    """Gini coefficient of one set of balances (0: equal; towards 1: one holds everything)."""
    return float(gini_rows(np.asarray(values, dtype=np.float64)[None, :])[0])


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval (0 for a single value)."""
    from scipy.stats import t

    a = np.asarray(values, dtype=float)
    if a.size < 2:
        return float(a.mean()), 0.0
    return float(a.mean()), float(t.ppf(0.975, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size))


def format_interval(value: tuple[float, float] | list[float], scale: float = 1.0, digits: int = 1) -> str:
    """``mean ± half-width`` of an ``interval``, scaled (100 for percent)."""
    return f"{value[0] * scale:.{digits}f} ± {value[1] * scale:.{digits}f}"
