"""Statistics within each dataset as well as pooled over the study's networks.

A study whose grid has several datasets (the ``dataset`` axis) mixes populations: Jacobian
norms, for one, scale with the input's size, so digits (8×8) and Fashion-MNIST (28×28)
networks differ in indicator and in gap for reasons that have nothing to do with
generalization within either, and a correlation pooled over both can be created, or
hidden, by that difference alone (Simpson's paradox). Novak et al. 2018 (arXiv
1802.08760, Fig. 4) report each dataset separately.

Every table this package writes per study then has a ``dataset`` column: ``pooled`` for
rows computed over all networks (what the tables held before), a dataset's name for rows
computed within it. A study with one dataset gets only ``pooled`` rows (they are within
that dataset: nothing else changes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import xarray as xr

from .tables import strings

POOLED = "pooled"
AXIS = "dataset"


def dataset_names(values) -> list[str]:
    """The distinct datasets, sorted, of a column or coordinate of dataset names."""
    return sorted({str(value) for value in np.asarray(values).tolist()})


def table_groups(table: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """(``pooled``, every network), then, when the table's ``dataset`` column has more than
    one value, (name, that dataset's networks) for each, sorted by name. Each part keeps the
    table's ``attrs`` (the hyperparameter names)."""
    yield POOLED, table
    if AXIS not in table or table[AXIS].nunique(dropna=False) < 2:
        return
    for name in dataset_names(table[AXIS]):
        part = table[table[AXIS].astype(str) == name].reset_index(drop=True)
        part.attrs = dict(table.attrs)
        yield name, part


def store_groups(ds: xr.Dataset) -> Iterator[tuple[str, xr.Dataset]]:
    """``table_groups`` for the aggregate dataset: (``pooled``, ds), then (name, its runs)
    per dataset when there are several."""
    yield POOLED, ds
    if AXIS not in ds.coords:
        return
    values = strings(ds[AXIS])
    names = dataset_names(values)
    if len(names) < 2:
        return
    for name in names:
        yield name, ds.isel(run=np.flatnonzero(values == name))


def with_dataset(frame: pd.DataFrame, name: str, after: str = "target") -> pd.DataFrame:
    """``frame`` with a ``dataset`` column of ``name``, placed right after column ``after``
    (first when ``frame`` has no such column)."""
    frame = frame.copy()
    position = frame.columns.get_loc(after) + 1 if after in frame.columns else 0
    frame.insert(position, AXIS, name)
    return frame


def per_dataset(func: Callable[[pd.DataFrame], pd.DataFrame], table: pd.DataFrame,
                after: str = "target") -> pd.DataFrame:
    """``func`` on every part of ``table_groups(table)``, the parts' tables stacked, each
    with its ``dataset`` column (pooled rows first)."""
    return pd.concat([with_dataset(func(part), name, after)
                      for name, part in table_groups(table)], ignore_index=True)


def pooled(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of a table computed over every network (``dataset == "pooled"``); a table
    without a ``dataset`` column is returned whole (it holds nothing else)."""
    if AXIS not in frame:
        return frame
    return frame[frame[AXIS].astype(str) == POOLED].reset_index(drop=True)
