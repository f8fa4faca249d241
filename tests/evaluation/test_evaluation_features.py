"""Features of hand-built SMEs, computed by hand from the formulas in evaluation/SCORING.md."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from evaluation.features import compute_features
from warehouse.canonical import TABLES
from warehouse.dossier_schema import FEATURE_COLUMNS

AS_OF = dt.date(2026, 1, 1)
NAN = math.nan

EXPECTED_DTYPES = {
    "sme_id": "str",
    "months_of_accounts": "int32",
    "currency": "str",
    "vat_returns_due": "Int32",
    "utility_bills_due": "Int32",
    "survey_visits": "Int32",
}

# SME-A, L12 = 2025: revenue 1000 + 100 i (i = 0..11) sums to 18600, mean 1550; 2024 sums to 12000.
# Cost of sales 7440, operating expenses 3600, depreciation 600, interest 240, tax 120.
SME_A = {
    "sme_id": "SME-A",
    "sources_used": ["accounting", "tax", "utility", "survey"],
    "months_of_accounts": 24,  # 2024-01..2025-12; not 2026-01 (incomplete) nor 2022-12 (outside 36)
    "currency": "GBP",
    "revenue_12m": 18600.0,
    "revenue_growth_yoy": 18600 / 12000 - 1,
    "revenue_trend_slope": 100 / 1550,  # +100 a month over a mean of 1550
    "revenue_volatility": 100 * math.sqrt((12**2 - 1) / 12) / 1550,  # std of 0..11 is sqrt(143/12)
    "gross_margin": (18600 - 7440) / 18600,
    "operating_margin": (18600 - 7440 - 3600 - 600) / 18600,
    "net_margin": (0.6 * 18600 - 12 * 380) / 18600,
    "current_ratio": 4000 / 2000,
    "quick_ratio": (4000 - 500) / 2000,
    "cash_to_monthly_costs": 2000 / ((7440 + 3600 + 240 + 120) / 12),
    "debt_to_assets": 6000 / 10000,
    "interest_coverage": (18600 - 7440 - 3600 - 600) / 240,
    "ebitda_12m": 18600 - 7440 - 3600,  # before depreciation
    "vat_returns_due": 8,  # 2023Q4 .. 2025Q3; 2025Q4 is due after as-of
    "vat_on_time_rate": 5 / 8,  # 2024Q2 and Q3 late, 2025Q3 open past due
    # 2024Q1..2025Q2: sales 4 * 2700 + 2970 + 3780 against books 4 * 3000 + 3300 + 4200
    "vat_books_revenue_ratio": (4 * 2700 + 2970 + 3780) / (4 * 3000 + 3300 + 4200),
    "utility_bills_due": 12,
    "utility_on_time_rate": 8 / 12,
    "utility_usage_trend": (540 / 600 + 60 / 48) / 2 - 1,  # electricity 0.9, gas 1.25
    # revenue Jul-Dec 2025 = 1600..2100 (11100) against Jul-Dec 2024 (6000)
    "utility_books_revenue_ratio": ((540 / 600 + 60 / 48) / 2) / (11100 / 6000),
    "survey_visits": 2,
    "survey_verified_rate": 1 / 2,
    "survey_revenue_ratio": 1500 / 1550,
}

SME_B = {
    "sme_id": "SME-B",
    "sources_used": [],
    "months_of_accounts": 0,
    "currency": None,
    **{c.name: NAN for c in FEATURE_COLUMNS if c.nullable and c.name != "currency"},
}

# SME-C: 6-month window, so only Jul-Dec 2025 count: revenue 6 * 500, cost of sales 600,
# operating expenses 600, net profit 1800; no liabilities, no total assets, no interest.
SME_C = SME_B | {
    "sme_id": "SME-C",
    "sources_used": ["accounting"],
    "months_of_accounts": 6,
    "currency": "KES",
    "revenue_12m": 3000.0,
    "revenue_trend_slope": 0.0,
    "revenue_volatility": 0.0,
    "gross_margin": (3000 - 600) / 3000,
    "operating_margin": (3000 - 600 - 600) / 3000,
    "net_margin": 1800 / 3000,
    "current_ratio": 10.0,  # cap: current assets 100, no current liabilities
    "quick_ratio": 10.0,
    "cash_to_monthly_costs": 0.0,
    "interest_coverage": 50.0,  # cap: operating profit, no interest
    "ebitda_12m": 3000.0 - 600 - 600,
}


def _expected(*rows: dict) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    for column, dtype in EXPECTED_DTYPES.items():
        frame[column] = frame[column].astype(dtype)
    return frame


def _comparable(features: pd.DataFrame) -> pd.DataFrame:
    return features.assign(sources_used=pd.Series(features["sources_used"].tolist(), dtype=object))


def test_hand_built_smes_give_hand_computed_features(hand_built) -> None:
    tables, smes = hand_built

    features = compute_features(tables, smes, as_of=AS_OF)

    assert list(features.columns) == ["sme_id", "sources_used", *(c.name for c in FEATURE_COLUMNS)]
    pd.testing.assert_frame_equal(
        _comparable(features), _expected(SME_A, SME_B, SME_C), check_exact=False, rtol=1e-12
    )
    assert {c: str(features[c].dtype) for c in EXPECTED_DTYPES} == EXPECTED_DTYPES


def test_missing_tables_and_empty_tables_give_nulls_not_errors(hand_built) -> None:
    _, smes = hand_built
    empty = {name: table.empty_frame() for name, table in TABLES.items()}

    for tables in ({}, empty):
        features = compute_features(tables, smes, as_of=AS_OF)
        pd.testing.assert_frame_equal(
            _comparable(features),
            _expected(SME_B | {"sme_id": "SME-A"}, SME_B, SME_B | {"sme_id": "SME-C"}),
        )


def test_books_alone_leave_other_sources_null(hand_built) -> None:
    tables, smes = hand_built

    features = compute_features({"monthly_financials": tables["monthly_financials"]}, smes, as_of=AS_OF)

    row = _comparable(features).iloc[0].to_dict()
    assert row["sources_used"] == ["accounting"]
    names = [c.name for c in FEATURE_COLUMNS]
    book_columns = names[: names.index("ebitda_12m") + 1]
    assert {k: row[k] for k in book_columns} == pytest.approx({k: SME_A[k] for k in book_columns})
    others = {k: row[k] for k in row if k not in book_columns and k not in ("sme_id", "sources_used")}
    assert all(pd.isna(v) for v in others.values()), others


def test_a_vat_period_with_an_unbooked_month_is_not_compared(hand_built, canonical) -> None:
    tables, smes = hand_built
    books = tables["monthly_financials"]
    gap = (books["sme_id"] == "SME-A") & (books["period_month"] == dt.date(2024, 2, 1))

    features = compute_features(tables | {"monthly_financials": books[~gap]}, smes, as_of=AS_OF)

    # 2024Q1 drops out on both sides: (3 * 2700 + 2970 + 3780) / (3 * 3000 + 3300 + 4200)
    assert features["vat_books_revenue_ratio"].iloc[0] == pytest.approx(14850 / 16500)
    assert features["months_of_accounts"].iloc[0] == 23


def _shifted(frame: pd.DataFrame, months: int) -> pd.DataFrame:
    """The same rows moved ``months`` months in time (keys stay unique: ids get a suffix)."""
    moved = frame.copy()
    for column in moved.columns:
        values = moved[column]
        if column in ("period_key", "visit_id", "usage_point_id"):
            moved[column] = values + f"+{months}"
        elif pd.api.types.is_datetime64_any_dtype(values):
            moved[column] = values + pd.DateOffset(months=months)
        elif values.dtype == object and values.map(lambda v: isinstance(v, dt.date)).any():
            moved[column] = (pd.to_datetime(values) + pd.DateOffset(months=months)).dt.date
            moved[column] = moved[column].where(values.notna(), None)
    return moved


def test_rows_after_as_of_or_before_the_window_change_nothing(hand_built) -> None:
    tables, smes = hand_built
    baseline = compute_features(tables, smes, as_of=AS_OF)
    noisy = {
        name: pd.concat([frame, _shifted(frame, 48), _shifted(frame, -48)], ignore_index=True)
        for name, frame in tables.items()
    }

    features = compute_features(noisy, smes, as_of=AS_OF)

    pd.testing.assert_frame_equal(_comparable(features), _comparable(baseline))


def test_history_window_limits_what_counts(hand_built) -> None:
    tables, smes = hand_built
    narrow = smes.assign(history_months=[12, 24, 6])

    row = compute_features(tables, narrow, as_of=AS_OF).iloc[0]

    assert row["months_of_accounts"] == 12
    assert np.isnan(row["revenue_growth_yoy"])  # no month of 2024 is in the window
    assert row["revenue_12m"] == 18600.0
    assert row["vat_returns_due"] == 4  # due in 2025 only: 2024Q4 .. 2025Q3
    assert row["vat_on_time_rate"] == 3 / 4
    assert row["vat_books_revenue_ratio"] == pytest.approx((2970 + 3780) / (3300 + 4200))
    assert np.isnan(row["utility_usage_trend"])  # the year-earlier months are outside
    assert row["survey_visits"] == 2


def test_an_earlier_as_of_sees_only_the_data_before_it(hand_built) -> None:
    tables, smes = hand_built

    row = compute_features(tables, smes, as_of=dt.date(2025, 7, 1)).iloc[0]

    # L12 = Jul 2024 .. Jun 2025: 6 * 1000 + (1000 + ... + 1500)
    assert row["revenue_12m"] == 6 * 1000 + 7500
    assert row["survey_visits"] == 1
    assert row["survey_verified_rate"] == 1.0
    assert row["vat_returns_due"] == 6  # due 2024-02 .. 2025-05: 2023Q4 .. 2025Q1
    assert row["utility_bills_due"] == 7  # Dec 2024 .. Jun 2025


def test_repeated_month_in_the_books_is_an_error_naming_it(hand_built) -> None:
    tables, smes = hand_built
    books = tables["monthly_financials"]
    repeated = pd.concat([books, books.iloc[[5]]], ignore_index=True)

    with pytest.raises(ValueError, match=r"monthly_financials: 1 .*SME-A 2024-06"):
        compute_features(tables | {"monthly_financials": repeated}, smes, as_of=AS_OF)


def test_missing_column_is_an_error_naming_table_and_column(hand_built) -> None:
    tables, smes = hand_built

    with pytest.raises(ValueError, match=r"vat_returns: missing columns \['due_date'\]"):
        compute_features(
            tables | {"vat_returns": tables["vat_returns"].drop(columns="due_date")}, smes, as_of=AS_OF
        )


@pytest.mark.parametrize(
    ("smes", "message"),
    [
        (pd.DataFrame({"sme_id": ["SME-A"]}), r"smes: missing columns \['history_months'\]"),
        (pd.DataFrame({"sme_id": ["SME-A", "SME-A"], "history_months": [12, 12]}), r"repeated: \['SME-A'\]"),
        (
            pd.DataFrame({"sme_id": ["SME-A", "SME-B"], "history_months": [12, None]}),
            r"negative for \['SME-B'\]",
        ),
    ],
)
def test_bad_sme_frame_is_an_error_naming_the_smes(smes: pd.DataFrame, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compute_features({}, smes, as_of=AS_OF)
