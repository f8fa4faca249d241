"""Population stability: is what we score still like what the model learned from?

The artifact keeps, for the PD and for each statement ratio, the training part's quantile bin
edges and the share of training rows in each bin and missing (``reference.psi`` of the artifact's
JSON, written by ``make train``). At every publish the same bins are counted over the dossiers
(:func:`bin_counts`; counts add across shards) and compared (:func:`stability`):

    PSI = sum over bins b (including "missing") of (p_b - q_b) * ln(p_b / q_b)

with ``p`` the published shares and ``q`` the training shares, each floored at :data:`FLOOR` so an
empty bin is finite. The usual reading: below 0.10 stable, 0.10-0.25 a shift worth watching, above
0.25 a shift that needs action (:func:`verdict`).

>>> reference = {"x": {"edges": [0.0], "shares": [0.5, 0.5], "missing": 0.0}}
>>> counts = bin_counts(pd.DataFrame({"x": [-1.0, 1.0, 2.0, None]}), reference)
>>> counts
{'x': [1, 2, 1]}
>>> round(stability(counts, reference)["x"], 4)
2.1285
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

FLOOR = 1e-4
"""Smallest share a bin is given on either side (so that ln(p / q) is finite)."""

WATCH, ACT = 0.10, 0.25
"""PSI thresholds of :func:`verdict`."""


def bin_counts(frame: pd.DataFrame, reference: Mapping[str, Mapping[str, Any]]) -> dict[str, list[int]]:
    """Per column of ``reference`` present in ``frame``: rows in each reference bin, then missing."""
    counts: dict[str, list[int]] = {}
    for name, ref in reference.items():
        if name not in frame.columns:
            continue
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        values = np.where(np.isinf(values), np.nan, values)
        present = values[~np.isnan(values)]
        edges = np.asarray(ref["edges"], dtype=np.float64)
        binned = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
        counts[name] = [*(int(c) for c in binned), int(np.isnan(values).sum())]
    return counts


def add_counts(parts: Iterable[Mapping[str, list[int]]]) -> dict[str, list[int]]:
    """The sum of several :func:`bin_counts` results (e.g. one per shard)."""
    total: dict[str, list[int]] = {}
    for part in parts:
        for name, counts in part.items():
            if name in total:
                total[name] = [a + b for a, b in zip(total[name], counts, strict=True)]
            else:
                total[name] = list(counts)
    return total


def stability(
    counts: Mapping[str, list[int]], reference: Mapping[str, Mapping[str, Any]]
) -> dict[str, float | None]:
    """PSI of each counted column against its reference (None when nothing was counted)."""
    result: dict[str, float | None] = {}
    for name, observed in counts.items():
        total = sum(observed)
        if total == 0:
            result[name] = None
            continue
        ref = reference[name]
        expected = np.maximum(np.array([*ref["shares"], ref["missing"]], dtype=np.float64), FLOOR)
        actual = np.maximum(np.asarray(observed, dtype=np.float64) / total, FLOOR)
        result[name] = round(float(((actual - expected) * np.log(actual / expected)).sum()), 4)
    return result


def verdict(psi: float | None) -> str:
    """``stable``, ``watch`` or ``shifted`` (``unknown`` for None)."""
    if psi is None:
        return "unknown"
    return "stable" if psi < WATCH else "watch" if psi < ACT else "shifted"


__all__ = ["ACT", "FLOOR", "WATCH", "add_counts", "bin_counts", "stability", "verdict"]
