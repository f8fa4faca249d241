"""Accounting connector: the bookkeeping platform's monthly reports, or its SAF-T export, and the bank statement.

``GET /v1/tenants/{tenant_id}/reports/monthly?from=YYYY-MM&to=YYYY-MM&page=N&page_size=K``; the
tenant is the connection's ``account_ref``; ``from``/``to`` are the months of the consent's history
window. Platforms that export the general ledger instead are read with ``books="saft"``:
``GET /v1/tenants/{tenant_id}/exports/saft?from&to`` answers a Norwegian SAF-T Financial XML
file, read by the same parser as an uploaded one (:mod:`connectors.formats.saft_no`). With
``bank_statement=True`` the business account's statement is pulled as well,
``GET /v1/tenants/{tenant_id}/bank/statement.ofx?from&to`` (OFX, read by
:mod:`connectors.formats.ofx`) into ``bank_transactions``.

A file the format parser refuses is a reject naming its record and field, so the SME is
quarantined exactly as for a bad monthly report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from urllib.parse import quote

import pandas as pd

from connectors.accounting.monthly_reports import parse_batch
from connectors.core.connector import Connection, OAuth2Connector, PullWindow, day_of
from connectors.core.http import ProviderClient
from connectors.core.parsing import (
    ParseResult,
    SmePages,
    build_result,
    combine_rejects,
    page_reject,
)
from connectors.core.streams import PageNumberPaginator, RawPage, SinglePage, Stream
from connectors.formats import ofx, saft_no
from connectors.formats.base import FormatError, Parsed
from warehouse.canonical import TABLES_BY_SOURCE

PAGE_SIZE = 50
"""Reports per page (the platform allows up to 100): a 36-month window is one page."""

BOOKS = ("reports", "saft")
CANONICAL = {table.name for table in TABLES_BY_SOURCE["accounting"]}


def _parse_files(
    batch: Sequence[SmePages], stream: str, parse: Callable[..., Parsed]
) -> tuple[dict[str, list[pd.DataFrame]], list[pd.DataFrame], dict[str, int]]:
    """Every page of ``stream`` read by its format parser: canonical frames, rejects, records per SME."""
    frames: dict[str, list[pd.DataFrame]] = {}
    rejects: list[pd.DataFrame] = []
    counts: dict[str, int] = {}
    for item in batch:
        for page in item.pages:
            if page.stream != stream:
                continue
            try:
                parsed = parse(page.body, sme_id=item.sme_id, raw_sha256=page.sha256)
            except FormatError as error:
                record = f"{page.label}/{error.record}" if page.label else error.record
                rejects.append(page_reject(item.sme_id, page, error.field, error.reason, record))
                continue
            for name, frame in parsed.tables.items():
                if name not in CANONICAL:
                    continue  # a side table of the format (trial balance, usage summaries)
                frames.setdefault(name, []).append(
                    frame.assign(source_record=page.label + "/" + frame["source_record"].astype("str"))
                )
            counts[item.sme_id] = counts.get(item.sme_id, 0) + int(
                parsed.totals.get("entries", parsed.totals.get("transactions", 0))
            )
    return frames, rejects, counts


class AccountingConnector(OAuth2Connector):
    source = "accounting"

    def __init__(
        self, page_size: int = PAGE_SIZE, *, books: str = "reports", bank_statement: bool = False
    ) -> None:
        if books not in BOOKS:
            raise ValueError(f"books must be one of {BOOKS}, got {books!r}")
        self.books = books
        self.bank_statement = bank_statement
        self.monthly_reports = Stream(
            name="monthly_reports",
            path="/v1/tenants/{tenant_id}/reports/monthly",
            paginator=PageNumberPaginator(page_size),
        )
        self.saft_export = Stream(
            name="saft_export",
            path="/v1/tenants/{tenant_id}/exports/saft",
            paginator=SinglePage("saft"),
            media_type="application/xml",
        )
        self.statement = Stream(
            name="bank_statement",
            path="/v1/tenants/{tenant_id}/bank/statement.ofx",
            paginator=SinglePage("statement"),
            media_type="application/x-ofx",
        )

    def pull(self, client: ProviderClient, connection: Connection, window: PullWindow) -> Iterator[RawPage]:
        path_values = {"tenant_id": quote(connection.account_ref, safe="")}
        params = {"from": window.first_month, "to": window.last_month}
        books = self.monthly_reports if self.books == "reports" else self.saft_export
        yield from books.pages(client, path_values=path_values, params=params)
        if self.bank_statement:
            yield from self.statement.pages(client, path_values=path_values, params=params)

    def row_dates(self, table: str, frame: pd.DataFrame) -> pd.Series | None:
        """Monthly reports are asked by month. A SAF-T export or a bank statement is always pulled
        whole: its balances run from the first month asked."""
        if self.books != "reports" or self.bank_statement:
            return None
        column = {"monthly_financials": "period_month", "bank_transactions": "booked_date"}.get(table)
        return None if column is None else day_of(frame[column])

    def parse(self, batch: Sequence[SmePages]) -> ParseResult:
        if self.books == "reports" and not self.bank_statement:
            return parse_batch(batch)
        reports = [
            SmePages(item.sme_id, [p for p in item.pages if p.stream == self.monthly_reports.name])
            for item in batch
        ]
        from_reports = parse_batch([item for item in reports if item.pages])
        frames = {name: [frame] for name, frame in from_reports.tables.items()}
        rejects = [from_reports.rejects]
        counts = dict(from_reports.records_raw)
        for stream, parser in ((self.saft_export.name, saft_no.parse), (self.statement.name, ofx.parse)):
            found, found_rejects, found_counts = _parse_files(batch, stream, parser)
            for name, parts in found.items():
                frames.setdefault(name, []).extend(parts)
            rejects += found_rejects
            for sme_id, count in found_counts.items():
                counts[sme_id] = counts.get(sme_id, 0) + count
        tables = {name: pd.concat(parts, ignore_index=True) for name, parts in frames.items() if parts}
        return build_result(self.source, tables, combine_rejects(rejects), counts)
