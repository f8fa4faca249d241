"""Tiny canonical frames built by hand for the evaluation tests.

``canonical(name, rows)`` turns a list of partial rows into a frame of that canonical table with
exactly the dtypes the pipeline hands to evaluation (via the table's Arrow schema). Columns a test
does not care about get neutral values, so each test spells out only what it computes on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from warehouse.canonical import TABLES


def _neutral(field: pa.Field) -> Any:
    if field.nullable:
        return None
    if pa.types.is_string(field.type):
        return "x"
    if pa.types.is_floating(field.type):
        return 0.0
    if pa.types.is_integer(field.type):
        return 0
    if pa.types.is_boolean(field.type):
        return True
    if pa.types.is_date(field.type):
        return dt.date(2000, 1, 1)
    if pa.types.is_timestamp(field.type):
        return dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    raise TypeError(f"no neutral value for {field}")


def make_canonical(name: str, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A frame of canonical table ``name`` holding ``rows`` (unspecified columns get neutral values)."""
    table = TABLES[name]
    if not rows:
        return table.empty_frame()
    complete = [
        {field.name: row.get(field.name, _neutral(field)) for field in table.schema}
        | {"source_record": f"test:{name}:{i}"}
        for i, row in enumerate(rows)
    ]
    return pa.Table.from_pylist(complete, schema=table.schema).to_pandas()


@pytest.fixture
def canonical() -> Callable[[str, list[dict[str, Any]]], pd.DataFrame]:
    return make_canonical


AS_OF = dt.date(2026, 1, 1)
"""As-of date of the hand-built book: month 1 is December 2025, the L12 months are 2025."""


def _month(year: int, month: int) -> dt.date:
    return dt.date(year, month, 1)


def _utc(year: int, month: int, day: int, hour: int = 10) -> dt.datetime:
    return dt.datetime(year, month, day, hour, tzinfo=dt.UTC)


def _books_a() -> list[dict[str, Any]]:
    """SME-A: 24 months of books. 2024 revenue 1000 a month; 2025 month i (0 = Jan) is 1000 + 100 i.

    Costs: 40% cost of sales, operating expenses 300, depreciation 50, interest 20, tax 10.
    December 2025 balances: cash 2000, inventory 500, current assets 4000, total assets 10000,
    current liabilities 2000, total liabilities 6000; every other month has different balances.
    Two rows must be ignored: January 2026 (the as-of month, not complete) and December 2022
    (37 months back, outside the 36-month history window).
    """
    rows = []
    months = [_month(2024, m) for m in range(1, 13)] + [_month(2025, m) for m in range(1, 13)]
    for i, month in enumerate(months):
        revenue = 1000.0 if month.year == 2024 else 1000.0 + 100.0 * (i - 12)
        latest = month == _month(2025, 12)
        rows.append(
            {
                "sme_id": "SME-A",
                "period_month": month,
                "currency": "GBP",
                "revenue": revenue,
                "cost_of_sales": 0.4 * revenue,
                "operating_expenses": 300.0,
                "depreciation": 50.0,
                "interest_expense": 20.0,
                "tax_expense": 10.0,
                "net_profit": 0.6 * revenue - 380.0,
                "cash": 2000.0 if latest else 100.0,
                "inventory": 500.0 if latest else 100.0,
                "current_assets": 4000.0 if latest else 1000.0,
                "total_assets": 10000.0 if latest else 5000.0,
                "current_liabilities": 2000.0 if latest else 1000.0,
                "total_liabilities": 6000.0 if latest else 1000.0,
            }
        )
    for month in (_month(2026, 1), _month(2022, 12)):
        rows.append({"sme_id": "SME-A", "period_month": month, "currency": "EUR", "revenue": 99999.0})
    return rows


def _books_c() -> list[dict[str, Any]]:
    """SME-C (6-month window): May-Dec 2025 booked at revenue 500, only Jul-Dec count.

    December 2025 has no liabilities and no total assets, to exercise the caps and nulls.
    """
    rows = [
        {
            "sme_id": "SME-C",
            "period_month": _month(2025, m),
            "currency": "KES",
            "revenue": 500.0,
            "cost_of_sales": 100.0,
            "operating_expenses": 100.0,
            "net_profit": 300.0,
            "current_assets": 100.0,
        }
        for m in range(5, 13)
    ]
    rows.append({"sme_id": "SME-C", "period_month": _month(2026, 1), "currency": "KES", "revenue": 7.0})
    rows.append({"sme_id": "SME-Z", "period_month": _month(2025, 12), "currency": "GBP", "revenue": 1.0})
    return rows


def _vat_return(
    period: tuple[dt.date, dt.date], due: dt.date, received: dt.date | None, sales: float | None
) -> dict[str, Any]:
    return {
        "sme_id": "SME-A",
        "period_key": f"{period[0]:%y}{period[0].month:02d}",
        "period_start": period[0],
        "period_end": period[1],
        "due_date": due,
        "status": "O" if received is None else "F",
        "received_date": received,
        "total_sales_ex_vat": sales,
    }


def _vat_a() -> list[dict[str, Any]]:
    """Quarterly returns; due 1 month and 7 days after the quarter. Sales are 90% of the books.

    2024Q2 and 2024Q3 were received late, 2025Q3 is open and overdue, 2025Q4 is not yet due, and
    2023Q4 fell due in the last 24 months but its period is older (so it is not compared).
    """
    d = dt.date
    returns = [
        _vat_return((d(2023, 10, 1), d(2023, 12, 31)), d(2024, 2, 7), d(2024, 2, 1), 5000.0),
        _vat_return((d(2024, 1, 1), d(2024, 3, 31)), d(2024, 5, 7), d(2024, 4, 27), 2700.0),
        _vat_return((d(2024, 4, 1), d(2024, 6, 30)), d(2024, 8, 7), d(2024, 8, 20), 2700.0),
        _vat_return((d(2024, 7, 1), d(2024, 9, 30)), d(2024, 11, 7), d(2024, 11, 20), 2700.0),
        _vat_return((d(2024, 10, 1), d(2024, 12, 31)), d(2025, 2, 7), d(2025, 1, 28), 2700.0),
        _vat_return((d(2025, 1, 1), d(2025, 3, 31)), d(2025, 5, 7), d(2025, 4, 27), 2970.0),
        _vat_return((d(2025, 4, 1), d(2025, 6, 30)), d(2025, 8, 7), d(2025, 7, 28), 3780.0),
        _vat_return((d(2025, 7, 1), d(2025, 9, 30)), d(2025, 11, 7), None, None),
        _vat_return((d(2025, 10, 1), d(2025, 12, 31)), d(2026, 2, 7), None, None),
    ]
    other = _vat_return((d(2025, 1, 1), d(2025, 3, 31)), d(2025, 5, 7), None, None)
    return [*returns, other | {"sme_id": "SME-Z"}]


def _readings_a() -> list[dict[str, Any]]:
    """Electricity: 100 kWh a month Jul-Dec 2024, 90 Jul-Dec 2025 (50 in between).
    Gas: 8 therm a month Jul-Dec 2024, 10 Jul-Dec 2025. A January 2026 reading must be ignored."""
    rows = []
    for year, month in [(2024, m) for m in range(6, 13)] + [(2025, m) for m in range(1, 13)] + [(2026, 1)]:
        if year == 2024:
            kwh, therm = 100.0, 8.0
        elif year == 2025:
            kwh, therm = (90.0, 10.0) if month >= 7 else (50.0, 3.0)
        else:
            kwh, therm = 5000.0, 5000.0
        start = _utc(year, month, 1, 0)
        rows.append(
            {
                "sme_id": "SME-A",
                "usage_point_id": "E1",
                "commodity": "electricity",
                "interval_start": start,
                "interval_seconds": 2_592_000,
                "consumption": kwh,
                "unit": "kWh",
                "currency": "GBP",
            }
        )
        rows.append(
            {
                "sme_id": "SME-A",
                "usage_point_id": "G1",
                "commodity": "gas",
                "interval_start": start,
                "interval_seconds": 2_592_000,
                "consumption": therm,
                "unit": "therm",
                "currency": "GBP",
            }
        )
    return rows


def _bills_a() -> list[dict[str, Any]]:
    """Twelve bills due on the 20th of each month of 2025; February and March paid late, November
    paid after as-of (late), December unpaid. One bill is older (December 2024) and one not yet due."""
    late = {2: dt.date(2025, 2, 25), 3: dt.date(2025, 3, 28), 11: dt.date(2026, 1, 5), 12: None}
    rows = []
    for month in range(1, 13):
        due = dt.date(2025, month, 20)
        paid = late.get(month, due - dt.timedelta(days=5))
        rows.append(
            {
                "sme_id": "SME-A",
                "usage_point_id": "E1",
                "period_start": _utc(2025, month, 1, 0),
                "due_date": due,
                "paid_date": paid,
            }
        )
    for start, due in (
        (_utc(2024, 12, 1, 0), dt.date(2024, 12, 20)),
        (_utc(2026, 1, 1, 0), dt.date(2026, 1, 20)),
    ):
        rows.append(
            {
                "sme_id": "SME-A",
                "usage_point_id": "E1",
                "period_start": start,
                "due_date": due,
                "paid_date": due,
            }
        )
    rows.append(
        {
            "sme_id": "SME-C",
            "usage_point_id": "C1",
            "period_start": _utc(2025, 2, 1, 0),
            "due_date": dt.date(2025, 3, 20),
            "paid_date": dt.date(2025, 3, 1),
        }
    )
    return rows


def _visit(sme: str, visit: str, at: dt.datetime, submitted: dt.datetime, **answers: Any) -> dict[str, Any]:
    return {"sme_id": sme, "visit_id": visit, "visited_at": at, "submitted_at": submitted} | answers


def _visits() -> list[dict[str, Any]]:
    """SME-A: two visits count (June: trading, stated 1500; November: found but closed). One was
    submitted after as-of, one happened after it, one is older than the window. SME-C's only
    visit is older than its 6-month window."""
    return [
        _visit(
            "SME-A",
            "v1",
            _utc(2025, 6, 10),
            _utc(2025, 6, 10, 11),
            premises_found=True,
            business_operating=True,
            reported_monthly_revenue=1500.0,
        ),
        _visit(
            "SME-A",
            "v2",
            _utc(2025, 11, 15),
            _utc(2025, 11, 15, 11),
            premises_found=True,
            business_operating=False,
        ),
        _visit(
            "SME-A",
            "v3",
            _utc(2025, 12, 31, 20),
            _utc(2026, 1, 1, 10),
            premises_found=False,
            business_operating=False,
        ),
        _visit(
            "SME-A",
            "v4",
            _utc(2026, 1, 5),
            _utc(2026, 1, 5, 11),
            premises_found=False,
            business_operating=False,
        ),
        _visit(
            "SME-A",
            "v5",
            _utc(2022, 6, 1),
            _utc(2022, 6, 1, 11),
            premises_found=False,
            business_operating=False,
        ),
        _visit(
            "SME-C",
            "c1",
            _utc(2025, 5, 1),
            _utc(2025, 5, 1, 11),
            premises_found=False,
            business_operating=False,
        ),
    ]


@pytest.fixture
def hand_built() -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Canonical tables of SME-A (every source), SME-B (nothing) and SME-C (short books), plus
    rows of SME-Z, who is not being evaluated; and the SME frame with their history windows."""
    tables = {
        "monthly_financials": make_canonical("monthly_financials", _books_a() + _books_c()),
        "vat_returns": make_canonical("vat_returns", _vat_a()),
        "utility_readings": make_canonical("utility_readings", _readings_a()),
        "utility_bills": make_canonical("utility_bills", _bills_a()),
        "survey_visits": make_canonical("survey_visits", _visits()),
    }
    smes = pd.DataFrame({"sme_id": ["SME-A", "SME-B", "SME-C"], "history_months": [36, 24, 6]})
    return tables, smes
