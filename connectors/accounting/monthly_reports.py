"""Parser of the bookkeeping platform's paged monthly reports (JSON) into ``monthly_financials``.

One report is one month of books: ``period`` (``YYYY-MM``), a ``profit_and_loss`` and a
``balance_sheet`` group of decimal-string amounts; the page carries the ``currency``. Each report
becomes one row whose ``source_record`` is ``page=N/reports[i]``.

A platform sync fault can repeat a month: a repeat with the same amounts (even under another
``report_id``) is an exact duplicate and is dropped; a repeat with other amounts is kept, so
validation sees two different rows for one month and quarantines the SME.

>>> body = b'{"currency": "GBP", "reports": [{"period": "2024-03", "profit_and_loss": {"revenue": "x"}}]}'
>>> result = parse_bytes(body, sme_id="SME-000001", label="page=1")
>>> result.rejects.loc[0, ["record", "field", "reason"]].tolist()
['page=1/reports[0]', 'profit_and_loss.revenue', "not a number: 'x'"]
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from connectors.core.parsing import (
    JsonRecords,
    ParseResult,
    SmePages,
    build_result,
    combine_rejects,
    money,
    single,
    to_date,
    to_number,
    to_text,
)
from warehouse.canonical import MONTHLY_FINANCIALS

SOURCE = "accounting"

AMOUNT_FIELDS: dict[str, str] = {
    "revenue": "profit_and_loss.revenue",
    "cost_of_sales": "profit_and_loss.cost_of_sales",
    "operating_expenses": "profit_and_loss.operating_expenses",
    "depreciation": "profit_and_loss.depreciation",
    "interest_expense": "profit_and_loss.interest_expense",
    "tax_expense": "profit_and_loss.tax_expense",
    "net_profit": "profit_and_loss.net_profit",
    "cash": "balance_sheet.cash",
    "receivables": "balance_sheet.receivables",
    "inventory": "balance_sheet.inventory",
    "current_assets": "balance_sheet.current_assets",
    "total_assets": "balance_sheet.total_assets",
    "current_liabilities": "balance_sheet.current_liabilities",
    "total_liabilities": "balance_sheet.total_liabilities",
    "equity": "balance_sheet.equity",
}
"""Canonical column -> the report's field path (as error messages name it)."""


def to_canonical(reports: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``monthly_financials`` columns from the flat reports, and every field that failed."""
    period, period_rejects = to_date(reports, "period", "period", fmt="%Y-%m")
    currency, currency_rejects = to_text(reports, "page.currency", "currency")
    columns: dict[str, pd.Series] = {
        "sme_id": reports["sme_id"],
        "period_month": period,
        "currency": currency.str.upper(),
    }
    rejects = [period_rejects, currency_rejects]
    for column, field in AMOUNT_FIELDS.items():
        values, field_rejects = to_number(reports, field, field)
        columns[column] = money(values)
        rejects.append(field_rejects)
    columns["source_record"] = reports["source_record"]
    columns["raw_sha256"] = reports["raw_sha256"]
    return pd.DataFrame(columns), combine_rejects(rejects)


def parse_batch(batch: Sequence[SmePages]) -> ParseResult:
    """The report pages of many SMEs -> ``monthly_financials`` (SMEs with a bad field: rejects only)."""
    records = JsonRecords("reports", page_fields=("currency",))
    for item in batch:
        for page in item.pages:
            records.add(item.sme_id, page)
    frame, field_rejects = to_canonical(records.frame())
    return build_result(
        SOURCE,
        {MONTHLY_FINANCIALS.name: frame},
        combine_rejects([records.all_rejects(), field_rejects]),
        records.counts,
    )


def parse_bytes(body: bytes, *, sme_id: str, label: str = "") -> ParseResult:
    """One report payload (a file or a single page) of one SME -> ``monthly_financials``."""
    return parse_batch(single(sme_id, body, source=SOURCE, label=label, media_type="application/json"))
