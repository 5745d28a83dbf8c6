"""Shared guards: which networks a statistic can use, and why it may be undefined.

Statistics report an undefined estimate as NaN with a ``note`` instead of raising, so a
study with a degenerate slice (three networks, a constant indicator) still writes its
tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def finite_xy(table: pd.DataFrame, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """Float arrays of columns x and y, keeping rows where both are finite."""
    xs = table[x].to_numpy(dtype=float)
    ys = table[y].to_numpy(dtype=float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    return xs[keep], ys[keep]


def degeneracy(x: np.ndarray, y: np.ndarray, min_n: int, names=("indicator", "target")) -> str:
    """Why a two-variable statistic is undefined on (x, y), or "" when it is defined."""
    if len(x) < min_n:
        return f"fewer than {min_n} networks with finite values (n={len(x)})"
    if np.ptp(x) == 0:
        return f"{names[0]} is constant"
    if np.ptp(y) == 0:
        return f"{names[1]} is constant"
    return ""
