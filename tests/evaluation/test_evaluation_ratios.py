"""Statement ratios from our monthly books, checked against statements worked out by hand."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from evaluation.ratios import statement_ratios
from evaluation.statement_model import RATIOS

AS_OF = dt.date(2026, 1, 1)
SMES = pd.DataFrame({"sme_id": ["SME-1"], "history_months": [36]})

# One month of the last year: revenue 10,000 - cost of sales 6,000 - overheads 2,000 - depreciation
# 500 - interest 250 - tax 250 = net profit 1,000.
MONTH = {
    "revenue": 10_000.0,
    "cost_of_sales": 6_000.0,
    "operating_expenses": 2_000.0,
    "depreciation": 500.0,
    "interest_expense": 250.0,
    "tax_expense": 250.0,
    "net_profit": 1_000.0,
}
# Month-end balances of the latest month (December 2025); earlier months carry other balances.
LATEST = {
    "cash": 5_000.0,
    "receivables": 8_000.0,
    "inventory": 7_000.0,
    "current_assets": 20_000.0,
    "total_assets": 50_000.0,
    "current_liabilities": 10_000.0,
    "total_liabilities": 30_000.0,
    "equity": 20_000.0,
}
OLDER = {name: 99_999.0 for name in LATEST}


def _books(months: list[str], flows: dict[str, float], sme_id: str = "SME-1") -> pd.DataFrame:
    rows = []
    for month in months:
        balances = LATEST if month == max(months) else OLDER
        rows.append(
            {"sme_id": sme_id, "period_month": dt.date.fromisoformat(month + "-01"), **flows, **balances}
        )
    return pd.DataFrame(rows).assign(currency="GBP")


LAST_YEAR = [f"2025-{m:02d}" for m in range(1, 13)]
YEAR_BEFORE = [f"2024-{m:02d}" for m in range(1, 13)]


def test_ratios_of_a_full_year_match_the_statement_worked_by_hand() -> None:
    books = pd.concat(
        [_books(LAST_YEAR, MONTH), _books(YEAR_BEFORE, MONTH | {"revenue": 8_000.0})], ignore_index=True
    )
    books.loc[books["period_month"] == dt.date(2024, 12, 1), list(LATEST)] = 99_999.0

    ratios = statement_ratios(books, SMES, as_of=AS_OF)

    # Year: sales 120,000; operating costs = cost of products sold 72,000 + 24,000 + 6,000 = 102,000;
    # depreciation 6,000; interest 3,000; net profit 12,000; gross profit = EBIT = 12,000 + 3,000 tax
    # + 3,000 interest = 18,000; operating profit 18,000; total costs 105,000. Balances: fixed assets 30,000,
    # long-term liabilities 20,000, working capital 10,000, constant capital 40,000.
    expected = {
        "attr1": 12_000 / 50_000,
        "attr2": 30_000 / 50_000,
        "attr3": 10_000 / 50_000,
        "attr4": 20_000 / 10_000,
        "attr7": 18_000 / 50_000,
        "attr8": 20_000 / 30_000,
        "attr10": 20_000 / 50_000,
        "attr12": 18_000 / 10_000,
        "attr13": 24_000 / 120_000,
        "attr14": 18_000 / 50_000,
        "attr16": 24_000 / 30_000,
        "attr17": 50_000 / 30_000,
        "attr18": 18_000 / 50_000,
        "attr19": 18_000 / 120_000,
        "attr21": 120_000 / 96_000,
        "attr22": 18_000 / 50_000,
        "attr23": 12_000 / 120_000,
        "attr24": np.nan,  # no third year of books
        "attr26": 18_000 / 30_000,
        "attr27": 18_000 / 3_000,
        "attr28": 10_000 / 30_000,
        "attr30": 25_000 / 120_000,
        "attr31": 21_000 / 120_000,
        "attr32": 10_000 * 365 / 102_000,
        "attr33": 102_000 / 10_000,
        "attr35": 18_000 / 50_000,
        "attr37": 13_000 / 20_000,
        "attr38": 40_000 / 50_000,
        "attr39": 18_000 / 120_000,
        "attr40": 5_000 / 10_000,
        "attr42": 18_000 / 120_000,
        "attr45": 12_000 / 7_000,
        "attr46": 13_000 / 10_000,
        "attr48": 12_000 / 50_000,
        "attr49": 12_000 / 120_000,
        "attr50": 20_000 / 30_000,
        "attr51": 10_000 / 50_000,
        "attr52": 10_000 / 102_000,
        "attr53": 20_000 / 30_000,
        "attr54": 40_000 / 30_000,
        "attr56": 18_000 / 120_000,
        "attr57": 3_000 / 96_000,
        "attr58": 105_000 / 120_000,
        "attr62": 10_000 * 365 / 120_000,
        "attr63": 120_000 / 10_000,
    }
    assert list(ratios.columns) == ["sme_id", *(r.attr for r in RATIOS)]
    assert set(expected) == {r.attr for r in RATIOS}
    pd.testing.assert_frame_equal(
        ratios,
        pd.DataFrame(
            {"sme_id": pd.array(["SME-1"], dtype="str"), **{k: [expected[k]] for k in ratios.columns[1:]}}
        ),
    )


def test_three_years_of_books_give_the_three_year_gross_profit() -> None:
    third = [f"2023-{m:02d}" for m in range(1, 13)]
    books = pd.concat([_books(third + YEAR_BEFORE + LAST_YEAR, MONTH)], ignore_index=True)

    ratios = statement_ratios(books, SMES, as_of=AS_OF)

    assert ratios.loc[0, "attr24"] == pytest.approx(3 * 18_000 / 50_000)
    assert ratios.loc[0, "attr21"] == pytest.approx(1.0)


def test_a_part_year_is_scaled_to_twelve_months_and_too_short_a_year_is_unknown() -> None:
    nine = _books(LAST_YEAR[3:], MONTH)  # April-December: 9 booked months
    five = _books(LAST_YEAR[7:], MONTH, sme_id="SME-2")  # August-December: 5 booked months
    smes = pd.DataFrame({"sme_id": ["SME-1", "SME-2"], "history_months": [36, 36]})

    ratios = statement_ratios(pd.concat([nine, five], ignore_index=True), smes, as_of=AS_OF)

    # 9 months of net profit 1,000 scaled by 12/9 is a year of 12,000, as with twelve months.
    assert ratios.loc[0, "attr1"] == pytest.approx(12_000 / 50_000)
    assert np.isnan(ratios.loc[0, "attr21"])  # no year before
    # Five months are too few for a year of flows: flow ratios are missing, balance ratios are not.
    assert np.isnan(ratios.loc[1, "attr1"])
    assert np.isnan(ratios.loc[1, "attr23"])
    assert ratios.loc[1, "attr2"] == pytest.approx(0.6)


def test_the_history_window_and_the_as_of_month_bound_what_counts() -> None:
    books = pd.concat([_books(YEAR_BEFORE + LAST_YEAR, MONTH), _books(["2026-01"], MONTH)], ignore_index=True)
    books.loc[books["period_month"] == dt.date(2026, 1, 1), "total_assets"] = 1.0  # the as-of month
    smes = pd.DataFrame({"sme_id": ["SME-1"], "history_months": [12]})

    ratios = statement_ratios(books, smes, as_of=AS_OF)

    assert ratios.loc[0, "attr1"] == pytest.approx(12_000 / 50_000)
    assert np.isnan(ratios.loc[0, "attr21"]), "the year before lies outside a 12-month consent"


def test_zero_denominators_are_missing_never_a_constant() -> None:
    books = _books(LAST_YEAR, MONTH | {"interest_expense": 0.0, "tax_expense": 500.0})
    books["inventory"] = 0.0

    ratios = statement_ratios(books, SMES, as_of=AS_OF)

    assert np.isnan(ratios.loc[0, "attr27"])  # no financial expenses
    assert np.isnan(ratios.loc[0, "attr45"])  # no inventory
    assert ratios.loc[0, "attr46"] == pytest.approx(2.0)


def test_smes_without_books_get_a_row_of_missing_ratios() -> None:
    smes = pd.DataFrame({"sme_id": ["SME-9", "SME-1"], "history_months": [36, 36]})

    ratios = statement_ratios(_books(LAST_YEAR, MONTH), smes, as_of=AS_OF)

    assert list(ratios["sme_id"]) == ["SME-9", "SME-1"]
    assert ratios.iloc[0, 1:].isna().all()
    assert ratios.iloc[1, 1:].notna().sum() == len(RATIOS) - 2  # attr21 and attr24 need older years


def test_bad_books_raise_naming_the_table() -> None:
    books = _books(LAST_YEAR, MONTH)
    with pytest.raises(ValueError, match=r"monthly_financials: missing columns \['receivables'\]"):
        statement_ratios(books.drop(columns=["receivables"]), SMES, as_of=AS_OF)
    with pytest.raises(ValueError, match=r"monthly_financials.*appear more than once"):
        statement_ratios(pd.concat([books, books.tail(1)]), SMES, as_of=AS_OF)
