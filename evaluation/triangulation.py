"""Triangulation: do the independent sources tell the same story as the books?

Inflated books improve every statement ratio; only sources the SME does not write itself can say
otherwise. Each *comparison* sets the books against one such source, read from the features
(``evaluation/SCORING.md`` §2):

* **VAT turnover** (``vat_books_revenue_ratio``: sales declared to the tax authority over revenue in
  the books, same months): 1 when they agree;
* **metered activity** (``utility_books_revenue_ratio``: electricity and gas use growth over revenue
  growth, same months a year apart): 1 when activity moved with the books' revenue;
* **the field visit** (``survey_revenue_ratio``: monthly revenue the owner stated to the agent over
  the books' monthly average).

A comparison's *badness* is ``clip((|ln ratio| - ln tolerance) / (ln limit - ln tolerance), 0, 1)``:
0 within the tolerance, 1 at or beyond the limit, on either side. The **consistency score** is
``1 - mean badness`` over the comparisons an SME's sources allow (null when none does: books plus
at least one other source are needed). Each comparison outside its tolerance gives a
machine-readable **discrepancy code** naming which side is higher, in :data:`COMPARISONS` order.

>>> frame = pd.DataFrame({"vat_books_revenue_ratio": [0.6, 1.0, None],
...                       "utility_books_revenue_ratio": [0.5, 1.02, None],
...                       "survey_revenue_ratio": [None, None, None]})
>>> result = consistency(frame)
>>> result["consistency_score"].round(3).tolist()
[0.0, 1.0, nan]
>>> [list(codes) for codes in result["discrepancy_codes"]]
[['BOOKS_ABOVE_VAT', 'BOOKS_GROWTH_ABOVE_USAGE'], [], []]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa


@dataclass(frozen=True)
class Comparison:
    """One cross-source comparison: its feature, tolerance, limit and the code of each side."""

    feature: str
    tolerance: float
    limit: float
    books_higher: str
    books_lower: str

    def badness(self, ratio: np.ndarray) -> np.ndarray:
        """0 within the tolerance, 1 at the limit or beyond (either side); NaN where not comparable.
        A ratio <= 0 (the other source saw nothing) is as bad as it gets."""
        with np.errstate(divide="ignore", invalid="ignore"):
            gap = np.where(ratio > 0, np.abs(np.log(np.where(ratio > 0, ratio, 1.0))), np.inf)
        scaled = (gap - np.log(self.tolerance)) / (np.log(self.limit) - np.log(self.tolerance))
        return np.where(np.isnan(ratio), np.nan, np.clip(scaled, 0.0, 1.0))


# fmt: off
COMPARISONS: tuple[Comparison, ...] = (
    # feature                        tolerance   limit  books higher                 books lower
    Comparison("vat_books_revenue_ratio",     1 / 0.92,  1 / 0.75, "BOOKS_ABOVE_VAT",          "BOOKS_BELOW_VAT"),
    Comparison("utility_books_revenue_ratio", 1 / 0.85,  1 / 0.50, "BOOKS_GROWTH_ABOVE_USAGE", "BOOKS_GROWTH_BELOW_USAGE"),
    Comparison("survey_revenue_ratio",        1.3,       2.5,      "BOOKS_ABOVE_SURVEY",       "BOOKS_BELOW_SURVEY"),
)
# fmt: on
"""The comparisons, their tolerances (the scorecard's "good" anchors) and limits (its "bad" ones).
Each ratio is the other source over the books, so a ratio below 1 means the books say more."""

DISCREPANCY_TEXTS: dict[str, str] = {
    "BOOKS_ABOVE_VAT": "Revenue in the books exceeds the sales declared for VAT over the same months.",
    "BOOKS_BELOW_VAT": "Sales declared for VAT exceed the revenue in the books over the same months.",
    "BOOKS_GROWTH_ABOVE_USAGE": "Revenue in the books grew much more than metered energy use at the premises.",
    "BOOKS_GROWTH_BELOW_USAGE": "Metered energy use grew much more than revenue in the books.",
    "BOOKS_ABOVE_SURVEY": "Revenue in the books is well above what the owner stated at the field visit.",
    "BOOKS_BELOW_SURVEY": "Revenue the owner stated at the field visit is well above the books.",
}
"""Plain-language meaning of each discrepancy code."""


def consistency(features: pd.DataFrame) -> pd.DataFrame:
    """``consistency_score`` (0 to 1, null without a comparison) and ``discrepancy_codes`` (a list per
    row) for each row of ``features``, indexed like it."""
    badness = []
    flags = []
    for comparison in COMPARISONS:
        ratio = features[comparison.feature].to_numpy(dtype=np.float64, na_value=np.nan)
        badness.append(comparison.badness(ratio))
        with np.errstate(divide="ignore", invalid="ignore"):
            flags.append(ratio < 1 / comparison.tolerance)
            flags.append(ratio > comparison.tolerance)
    block = np.column_stack(badness) if badness else np.zeros((len(features), 0))
    counted = (~np.isnan(block)).sum(axis=1)
    score = np.where(counted > 0, 1.0 - np.nansum(block, axis=1) / np.maximum(counted, 1), np.nan)
    codes = [code for c in COMPARISONS for code in (c.books_higher, c.books_lower)]
    table = np.column_stack(flags)
    offsets = np.concatenate([[0], table.sum(axis=1).cumsum()]).astype(np.int32)
    values = np.broadcast_to(np.array(codes, dtype=object), table.shape)[table]
    lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.string()))
    return pd.DataFrame(
        {
            "consistency_score": np.round(score, 4),
            "discrepancy_codes": pd.arrays.ArrowExtensionArray(lists),
        },
        index=features.index,
    )


__all__ = ["COMPARISONS", "DISCREPANCY_TEXTS", "Comparison", "consistency"]
