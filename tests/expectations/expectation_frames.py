"""Small canonical frames for the validation tests: clean SMEs, and one defect per SME.

Frames are built from Python rows through each table's Arrow schema and ``to_pandas()``, so they
carry exactly the dtypes the pipeline reads back from Parquet (``datetime.date`` objects, pandas
strings, UTC timestamps).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from typing import Any

import pandas as pd
import pyarrow as pa

from warehouse.canonical import TABLES

AS_OF = dt.date(2026, 11, 1)
UTC = dt.UTC


def sha(sme_id: str, source: str) -> str:
    """A stand-in digest of the raw payload of one SME's source."""
    return hashlib.sha256(f"{sme_id}/{source}".encode()).hexdigest()


def monthly_rows(sme_id: str) -> list[dict[str, Any]]:
    """Three balanced months: P&L adds up to net_profit, assets = liabilities + equity."""
    return [
        {
            "sme_id": sme_id,
            "period_month": dt.date(2026, month, 1),
            "currency": "GBP",
            "revenue": 10000.0,
            "cost_of_sales": 4000.0,
            "operating_expenses": 3000.0,
            "depreciation": 200.0,
            "interest_expense": 100.0,
            "tax_expense": 500.0,
            "net_profit": 2200.0,
            "cash": 5000.0,
            "receivables": 3000.0,
            "inventory": 2000.0,
            "current_assets": 10000.0,
            "total_assets": 25000.0,
            "current_liabilities": 6000.0,
            "total_liabilities": 15000.0,
            "equity": 10000.0,
            "source_record": f"reports[{index}]",
            "raw_sha256": sha(sme_id, "accounting"),
        }
        for index, month in enumerate((7, 8, 9))
    ]


def vat_rows(sme_id: str) -> list[dict[str, Any]]:
    """One filed quarter whose boxes add up and one open quarter without a return."""
    empty_boxes = dict.fromkeys(
        (
            "vat_due_sales",
            "vat_due_acquisitions",
            "total_vat_due",
            "vat_reclaimed",
            "net_vat_due",
            "total_sales_ex_vat",
            "total_purchases_ex_vat",
            "total_goods_supplied_ex_vat",
            "total_acquisitions_ex_vat",
        )
    )
    return [
        {
            "sme_id": sme_id,
            "period_key": "26A2",
            "period_start": dt.date(2026, 4, 1),
            "period_end": dt.date(2026, 6, 30),
            "due_date": dt.date(2026, 8, 7),
            "status": "F",
            "received_date": dt.date(2026, 8, 1),
            "vat_due_sales": 2000.0,
            "vat_due_acquisitions": 0.0,
            "total_vat_due": 2000.0,
            "vat_reclaimed": 800.0,
            "net_vat_due": 1200.0,
            "total_sales_ex_vat": 10000.0,
            "total_purchases_ex_vat": 4000.0,
            "total_goods_supplied_ex_vat": 0.0,
            "total_acquisitions_ex_vat": 0.0,
            "source_record": "returns/26A2",
            "raw_sha256": sha(sme_id, "tax"),
        },
        {
            "sme_id": sme_id,
            "period_key": "26A3",
            "period_start": dt.date(2026, 7, 1),
            "period_end": dt.date(2026, 9, 30),
            "due_date": dt.date(2026, 11, 7),
            "status": "O",
            "received_date": None,
            **empty_boxes,
            "source_record": "obligations[1]",
            "raw_sha256": sha(sme_id, "tax"),
        },
    ]


def reading_rows(sme_id: str) -> list[dict[str, Any]]:
    """Two monthly readings of an electricity meter and one of a gas meter."""
    rows = []
    for meter, commodity, unit, months in (
        ("E1", "electricity", "kWh", (8, 9)),
        ("G1", "gas", "therm", (9,)),
    ):
        for month in months:
            rows.append(
                {
                    "sme_id": sme_id,
                    "usage_point_id": f"{sme_id}-{meter}",
                    "commodity": commodity,
                    "interval_start": dt.datetime(2026, month, 1, tzinfo=UTC),
                    "interval_seconds": 30 * 86400,
                    "consumption": 500.0,
                    "unit": unit,
                    "cost": 120.5,
                    "currency": "GBP",
                    "source_record": f"IntervalBlock/{meter}/{month}",
                    "raw_sha256": sha(sme_id, "utility"),
                }
            )
    return rows


def bill_rows(sme_id: str) -> list[dict[str, Any]]:
    """A paid bill and a bill not yet paid, for the electricity meter."""
    return [
        {
            "sme_id": sme_id,
            "usage_point_id": f"{sme_id}-E1",
            "period_start": dt.datetime(2026, month, 1, tzinfo=UTC),
            "period_seconds": 30 * 86400,
            "amount_due": 130.0,
            "currency": "GBP",
            "due_date": dt.date(2026, month + 1, 15),
            "paid_date": paid,
            "source_record": f"UsageSummary/{month}",
            "raw_sha256": sha(sme_id, "utility"),
        }
        for month, paid in ((8, dt.date(2026, 9, 10)), (9, None))
    ]


def visit_rows(sme_id: str) -> list[dict[str, Any]]:
    """One field visit that found the business trading."""
    return [
        {
            "sme_id": sme_id,
            "visit_id": f"visit-{sme_id}",
            "form_version": "v1",
            "agent_id": "agent_001",
            "visited_at": dt.datetime(2026, 10, 1, 10, 0, tzinfo=UTC),
            "submitted_at": dt.datetime(2026, 10, 1, 12, 30, tzinfo=UTC),
            "premises_found": True,
            "business_operating": True,
            "employees_observed": 3,
            "customers_observed": 2,
            "stock_level": "normal",
            "reported_monthly_revenue": 9000.0,
            "latitude": 51.5072,
            "longitude": -0.1276,
            "photo_count": 3,
            "notes": "Shop open, shelves stocked.",
            "source_record": f"results[{sme_id[-1]}]",
            "raw_sha256": sha(sme_id, "survey"),
        }
    ]


def submission_rows(sme_id: str) -> list[dict[str, Any]]:
    """The field visit as a generic submission (mapped), and one submission of an unmapped form."""
    visit = visit_rows(sme_id)[0]
    common = {
        "sme_id": sme_id,
        "form_version": "v1",
        "agent_id": "agent_001",
        "latitude": 51.5072,
        "longitude": -0.1276,
        "raw_sha256": sha(sme_id, "survey"),
    }
    return [
        common
        | {
            "submission_id": visit["visit_id"],
            "form_id": "field_visit",
            "started_at": visit["visited_at"],
            "ended_at": dt.datetime(2026, 10, 1, 10, 40, tzinfo=UTC),
            "submitted_at": visit["submitted_at"],
            "attachments": 3,
            "answers": '{"group_premises/business_operating": "yes", "group_premises/premises_found": "yes"}',
            "mapping": "field_visit",
            "source_record": visit["source_record"],
        },
        common
        | {
            "submission_id": f"shop-{sme_id}",
            "form_id": "shop_profile",
            "started_at": None,
            "ended_at": None,
            "submitted_at": dt.datetime(2026, 9, 3, 8, 0, tzinfo=UTC),
            "attachments": 0,
            "answers": '{"shop/sign_visible": "yes"}',
            "mapping": None,
            "source_record": f"results[{sme_id[-1]}1]",
        },
    ]


def bank_rows(sme_id: str) -> list[dict[str, Any]]:
    """Two posted transactions and the statement's ledger balance after them."""
    common = {
        "sme_id": sme_id,
        "account_id": "12300 000012345678",
        "account_type": "checking",
        "currency": "GBP",
    }
    return [
        {
            **common,
            "entry_type": "transaction",
            "entry_id": f"tx-{index}",
            "booked_date": dt.date(2026, 10, day),
            "amount": amount,
            "transaction_type": kind,
            "description": description,
            "source_record": f"STMTTRN[{index}]",
            "raw_sha256": sha(sme_id, "accounting"),
        }
        for index, (day, amount, kind, description) in enumerate(
            ((3, -6.6, "POS", "Corner shop"), (12, 1200.0, "CREDIT", "Customer payment"))
        )
    ] + [
        {
            **common,
            "entry_type": "ledger_balance",
            "entry_id": "2026-10-31",
            "booked_date": dt.date(2026, 10, 31),
            "amount": 5193.4,
            "transaction_type": None,
            "description": None,
            "source_record": "LEDGERBAL",
            "raw_sha256": sha(sme_id, "accounting"),
        }
    ]


ROWS: dict[str, Callable[[str], list[dict[str, Any]]]] = {
    "monthly_financials": monthly_rows,
    "vat_returns": vat_rows,
    "utility_readings": reading_rows,
    "utility_bills": bill_rows,
    "survey_visits": visit_rows,
    "bank_transactions": bank_rows,
    "survey_submissions": submission_rows,
}


def frame(table_name: str, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as the pipeline reads them back: through the table's Arrow schema to pandas."""
    return pa.Table.from_pylist(rows, schema=TABLES[table_name].schema).to_pandas()


def row_sets(sme_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Clean rows of every table for ``sme_ids``, as lists a test may still edit."""
    return {name: [row for sme_id in sme_ids for row in build(sme_id)] for name, build in ROWS.items()}


def frames(rows: dict[str, list[dict[str, Any]]]) -> dict[str, pd.DataFrame]:
    return {name: frame(name, table_rows) for name, table_rows in rows.items()}


def clean_tables(sme_ids: list[str]) -> dict[str, pd.DataFrame]:
    """Every canonical table for ``sme_ids``, with data that passes every suite."""
    return frames(row_sets(sme_ids))


def edit(rows: list[dict[str, Any]], sme_id: str, where: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """Apply ``changes`` to the one row of ``sme_id`` matching ``where``; returns the edited row."""
    matches = [r for r in rows if r["sme_id"] == sme_id and all(r[k] == v for k, v in where.items())]
    assert len(matches) == 1, f"expected one row of {sme_id} where {where}, found {len(matches)}"
    matches[0].update(changes)
    return matches[0]
