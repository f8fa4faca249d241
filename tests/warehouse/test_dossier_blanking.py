"""blank_outside_sources empties what a dossier's sources_used does not cover, whatever holds the lists."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from warehouse.dossier_schema import blank_outside_sources

USED = [["accounting", "tax"], [], ["tax"], ["accounting", "survey"], ["accounting"]]


def _rows(sources_used: pd.Series) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sources_used": sources_used,
            "months_of_accounts": np.array([12, 3, 6, 9, 24], dtype=np.int32),
            "revenue_12m": [1.0, 2.0, 3.0, 4.0, 5.0],
            "vat_on_time_rate": [0.5, 0.6, 0.7, 0.8, 0.9],
            "vat_books_revenue_ratio": [1.1, 1.2, 1.3, 1.4, 1.5],
            "survey_revenue_ratio": [2.1, 2.2, 2.3, 2.4, 2.5],
        },
        index=[10, 11, 12, 13, 14],
    )


def test_arrow_and_python_lists_blank_the_same_cells_also_of_a_slice() -> None:
    arrow = pd.Series(
        pd.arrays.ArrowExtensionArray(pa.array(USED, type=pa.list_(pa.string()))), index=range(10, 15)
    )
    python = pd.Series(USED, index=range(10, 15), dtype=object)

    blanked = blank_outside_sources(_rows(arrow).iloc[1:])

    nan = np.nan
    expected = pd.DataFrame(
        {
            "months_of_accounts": np.array([0, 0, 9, 24], dtype=np.int32),
            "revenue_12m": [nan, nan, 4.0, 5.0],
            "vat_on_time_rate": [nan, 0.7, nan, nan],
            "vat_books_revenue_ratio": [nan, nan, nan, nan],
            "survey_revenue_ratio": [nan, nan, 2.4, nan],
        },
        index=[11, 12, 13, 14],
    )
    pd.testing.assert_frame_equal(blanked.drop(columns=["sources_used"]), expected)
    assert blanked["sources_used"].tolist() == USED[1:]
    from_python = blank_outside_sources(_rows(python).iloc[1:])
    pd.testing.assert_frame_equal(from_python.drop(columns=["sources_used"]), expected)
